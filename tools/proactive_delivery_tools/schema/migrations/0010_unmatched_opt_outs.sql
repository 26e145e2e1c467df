-- Opt-outs and opt-ins from numbers no contractor had yet (outcome 'unmatched'), by number:
-- register_contractor_phones (adapters/postgres/sql/inbound.sql) looks up the latest of each
-- number it has just learnt, whenever evaluate meets a contractor for the first time. A
-- partial index: it holds only those few events, however many replies and receipts the
-- table keeps, so the lookup is an index probe a number and never reads the table.
-- Built inside the migration's transaction like every index here: writes to inbound_event
-- wait while it is built (docs/operations.md, "Retention purge", says when to deploy).
CREATE INDEX IF NOT EXISTS inbound_event_unmatched_consent_idx
    ON delivery.inbound_event (phone_hash, occurred_at DESC, id DESC)
    WHERE outcome = 'unmatched' AND action IN ('opt_out', 'opt_in') AND phone_hash IS NOT NULL;
