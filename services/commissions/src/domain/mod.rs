//! Commissions' rules, pure: money, the double-entry ledger, commission and clawback
//! arithmetic, the calendar of holds and recurring plans, and monthly statements.

pub mod calendar;
pub mod commission;
pub mod ledger;
pub mod money;
pub mod statements;
