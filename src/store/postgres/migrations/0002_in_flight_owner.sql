-- Which daemon listed each in-flight mark (its lease owner name): when several daemons share
-- the database, one recovers only the marks of daemons that are gone (src/store/postgres/shared.rs).
ALTER TABLE in_flight ADD COLUMN owner text NOT NULL DEFAULT '';
