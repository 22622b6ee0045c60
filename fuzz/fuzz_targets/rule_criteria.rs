//! Lead-routing rule criteria staff write: any field, operator and value is accepted or
//! refused without panicking; an accepted criterion can be applied to any lead; an EQUALS on a
//! text field holds for a lead with exactly that value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_deals::domain::rules::{Criterion, Field, LeadFacts, Operator};

const OPERATORS: [Operator; 4] = [Operator::Equals, Operator::In, Operator::GreaterThan, Operator::LessThan];

fuzz_target!(|input: (&str, u8, &str, String, String, String, i64)| {
    let (field, op, value, country, industry, company_name, employee_count) = input;
    let operator = OPERATORS[usize::from(op) % OPERATORS.len()];
    assert_eq!(Operator::parse(operator.as_str()), Some(operator));
    let lead = LeadFacts { country, industry, company_name, employee_count };
    let Ok(criterion) = Criterion::new(field, operator, value) else { return };
    assert_eq!(criterion.value, value.trim());
    assert!(!criterion.value.is_empty());
    assert_eq!(Field::parse(field.trim()), Some(criterion.field));
    let _ = criterion.holds(&lead);

    if operator == Operator::Equals && !criterion.field.is_numeric() {
        let mut same = lead.clone();
        match criterion.field {
            Field::Country => same.country = value.to_owned(),
            Field::Industry => same.industry = value.to_owned(),
            _ => same.company_name = value.to_owned(),
        }
        assert!(criterion.holds(&same), "{criterion:?} on its own value");
    }
    if criterion.field.is_numeric() && operator == Operator::Equals {
        if let Ok(n) = criterion.value.parse::<i64>() {
            assert!(criterion.holds(&LeadFacts { employee_count: n, ..lead }));
        }
    }
});
