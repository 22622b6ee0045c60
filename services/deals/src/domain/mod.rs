//! The rules of deals and leads as plain functions: assignment-rule matching and round-robin
//! order, lead states, customer-domain normalisation, registration expiry and money checks.

pub mod directory;
pub mod leads;
pub mod registration;
pub mod rules;
