//! `RatesService`: exchange rates to USD and market multipliers, as exact decimal strings.

use tandem_platform::{paging::Page, time::now_micros, validate::Validator};
use tandem_proto::tiers::v1::{self as pb, rates_service_server::RatesService};
use tonic::Request;

use super::{TiersApi, caller, convert, grpc, require_staff};
use crate::{
    domain::money::{self, format_decimal, parse_positive_decimal},
    error::Result,
    store::{self, RateRow, RateTable},
};

grpc! {
    RatesService {
        set_exchange_rate => set_exchange_rate_(SetExchangeRateRequest) -> SetExchangeRateResponse;
        list_exchange_rates => list_exchange_rates_(ListExchangeRatesRequest) -> ListExchangeRatesResponse;
        set_market_multiplier => set_market_multiplier_(SetMarketMultiplierRequest) -> SetMarketMultiplierResponse;
        list_market_multipliers => list_market_multipliers_(ListMarketMultipliersRequest) -> ListMarketMultipliersResponse;
    }
}

/// Validates a decimal setting and returns it normalised.
fn decimal(v: &mut Validator, field: &str, text: &str) -> String {
    match parse_positive_decimal(text) {
        Ok(value) => format_decimal(value),
        Err(err) => {
            v.violation(field, err.to_string());
            String::new()
        }
    }
}

impl TiersApi {
    async fn set_rate(&self, table: RateTable, code: String, value: String) -> Result<RateRow> {
        let row = RateRow { code, value, update_time: now_micros() };
        let mut conn = self.db.acquire().await?;
        store::set_rate(&mut conn, table, &row).await?;
        Ok(row)
    }

    async fn list_rates(
        &self,
        table: RateTable,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<RateRow>, String)> {
        let page = Page::parse(page_size, page_token)?;
        let mut conn = self.db.acquire().await?;
        let rows = store::list_rates(&mut conn, table, page.after_key(), page.limit()).await?;
        Ok(page.finish(rows, |r| r.code.clone()))
    }

    async fn set_exchange_rate_(
        &self,
        request: Request<pb::SetExchangeRateRequest>,
    ) -> Result<pb::SetExchangeRateResponse> {
        require_staff(caller(&request)?.as_ref(), "only vendor staff set exchange rates")?;
        let pb::SetExchangeRateRequest { currency_code, usd_per_unit } = request.into_inner();
        let mut v = Validator::new();
        v.check(
            money::is_currency_code(&currency_code),
            "currency_code",
            "must be an ISO 4217 code such as \"EUR\"",
        )
        .check(currency_code != "USD", "currency_code", "USD is always 1");
        let value = decimal(&mut v, "usd_per_unit", &usd_per_unit);
        v.finish()?;
        let row = self.set_rate(RateTable::ExchangeRates, currency_code, value).await?;
        Ok(pb::SetExchangeRateResponse { exchange_rate: Some(convert::exchange_rate(&row)) })
    }

    async fn list_exchange_rates_(
        &self,
        request: Request<pb::ListExchangeRatesRequest>,
    ) -> Result<pb::ListExchangeRatesResponse> {
        caller(&request)?;
        let pb::ListExchangeRatesRequest { page_size, page_token } = request.into_inner();
        let (rows, next_page_token) =
            self.list_rates(RateTable::ExchangeRates, page_size, &page_token).await?;
        Ok(pb::ListExchangeRatesResponse {
            exchange_rates: rows.iter().map(convert::exchange_rate).collect(),
            next_page_token,
        })
    }

    async fn set_market_multiplier_(
        &self,
        request: Request<pb::SetMarketMultiplierRequest>,
    ) -> Result<pb::SetMarketMultiplierResponse> {
        require_staff(caller(&request)?.as_ref(), "only vendor staff set market multipliers")?;
        let pb::SetMarketMultiplierRequest { country_code, multiplier } = request.into_inner();
        let mut v = Validator::new();
        v.check(
            money::is_country_code(&country_code),
            "country_code",
            "must be an ISO 3166-1 alpha-2 code such as \"BR\"",
        );
        let value = decimal(&mut v, "multiplier", &multiplier);
        v.finish()?;
        let row = self.set_rate(RateTable::MarketMultipliers, country_code, value).await?;
        Ok(pb::SetMarketMultiplierResponse { market_multiplier: Some(convert::market_multiplier(&row)) })
    }

    async fn list_market_multipliers_(
        &self,
        request: Request<pb::ListMarketMultipliersRequest>,
    ) -> Result<pb::ListMarketMultipliersResponse> {
        caller(&request)?;
        let pb::ListMarketMultipliersRequest { page_size, page_token } = request.into_inner();
        let (rows, next_page_token) =
            self.list_rates(RateTable::MarketMultipliers, page_size, &page_token).await?;
        Ok(pb::ListMarketMultipliersResponse {
            market_multipliers: rows.iter().map(convert::market_multiplier).collect(),
            next_page_token,
        })
    }
}
