//! The tiers and points rules as plain types and functions, tested without a server.

pub mod calendar;
pub mod money;
pub mod points;
pub mod progress;
pub mod status;

/// Generates a closed set of names stored as text, with their proto counterparts.
macro_rules! stored_enum {
    ($name:ident : $proto:ty { $($variant:ident = $text:literal),* $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)* _ => None }
            }
        }

        impl From<$name> for $proto {
            fn from(value: $name) -> Self {
                match value { $($name::$variant => <$proto>::$variant),* }
            }
        }

        impl TryFrom<$proto> for $name {
            type Error = ();
            fn try_from(value: $proto) -> Result<Self, ()> {
                match value { $(<$proto>::$variant => Ok($name::$variant),)* _ => Err(()) }
            }
        }
    };
}

stored_enum!(PointsKind: tandem_proto::tiers::v1::PointsKind { Sold = "SOLD", Managed = "MANAGED" });
stored_enum!(DealType: tandem_proto::tiers::v1::DealType {
    NewBusiness = "NEW_BUSINESS",
    Upsell = "UPSELL",
    Renewal = "RENEWAL",
});
stored_enum!(MarketType: tandem_proto::tiers::v1::MarketType { Standard = "STANDARD", Growth = "GROWTH" });

impl DealType {
    pub fn from_event(kind: tandem_proto::events::v1::DealKind) -> Option<Self> {
        use tandem_proto::events::v1::DealKind;
        match kind {
            DealKind::NewBusiness => Some(Self::NewBusiness),
            DealKind::Upsell => Some(Self::Upsell),
            DealKind::Renewal => Some(Self::Renewal),
            DealKind::Unspecified => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_proto::tiers::v1 as pb;

    #[test]
    fn stored_names_round_trip() {
        for k in PointsKind::ALL {
            assert_eq!(PointsKind::parse(k.as_str()), Some(*k));
            assert_eq!(PointsKind::try_from(pb::PointsKind::from(*k)), Ok(*k));
        }
        for k in DealType::ALL {
            assert_eq!(DealType::parse(k.as_str()), Some(*k));
            assert_eq!(DealType::try_from(pb::DealType::from(*k)), Ok(*k));
        }
        for k in MarketType::ALL {
            assert_eq!(MarketType::parse(k.as_str()), Some(*k));
            assert_eq!(MarketType::try_from(pb::MarketType::from(*k)), Ok(*k));
        }
        assert_eq!(PointsKind::try_from(pb::PointsKind::Unspecified), Err(()));
        assert_eq!(DealType::parse("nope"), None);
    }
}
