-- Delivery state lives in this project's own schema. The platform's tables are only read,
-- plus sent_at / updated_at set on delivery; no migration here ever alters them.
CREATE SCHEMA IF NOT EXISTS delivery;

-- One row per message to deliver, keyed by where it came from. Every change of state is a
-- single conditional UPDATE (see queries.sql), never a read followed by a write.
CREATE TABLE IF NOT EXISTS delivery.message_state (
    id               bigserial PRIMARY KEY,
    source           text        NOT NULL,
    source_id        bigint      NOT NULL,
    state            text        NOT NULL DEFAULT 'pending',
    attempts         integer     NOT NULL DEFAULT 0,
    channel          text,
    provider_ref     text,
    reason           text,
    last_error       text,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz,
    claim_token      uuid,
    queued_at        timestamptz,
    sent_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT message_state_source_key UNIQUE (source, source_id),
    CONSTRAINT message_state_state_check CHECK (
        state IN ('pending', 'queued', 'sending', 'sent', 'deferred', 'skipped', 'failed')
    ),
    CONSTRAINT message_state_lease_check CHECK (state <> 'sending' OR lease_expires_at IS NOT NULL)
);

-- The reconciliation sweep scans only open rows. A partial index keeps that an index scan
-- however many sent/skipped/failed rows pile up behind it.
CREATE INDEX IF NOT EXISTS message_state_open_idx
    ON delivery.message_state (source, id)
    WHERE state IN ('pending', 'queued', 'sending', 'deferred');

-- Every send attempt with its outcome, HTTP status, latency and error.
CREATE TABLE IF NOT EXISTS delivery.attempt_log (
    id          bigserial PRIMARY KEY,
    delivery_id bigint      NOT NULL REFERENCES delivery.message_state (id),
    attempt     integer     NOT NULL,
    channel     text,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    http_status integer,
    outcome     text        NOT NULL,
    error       text,
    latency_ms  integer
);

CREATE INDEX IF NOT EXISTS attempt_log_delivery_idx ON delivery.attempt_log (delivery_id);
CREATE INDEX IF NOT EXISTS attempt_log_finished_idx ON delivery.attempt_log (finished_at);
