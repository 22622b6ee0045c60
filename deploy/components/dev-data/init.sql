-- One database per service, as in production.
CREATE DATABASE identity;
CREATE DATABASE deals;
CREATE DATABASE tiers;
CREATE DATABASE commissions;
