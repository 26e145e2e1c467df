-- Per-contractor delivery preferences and the columns the delivery policy needs.
-- Additive and re-runnable, like every migration here. Values are validated where they are
-- used (policy.py), not by CHECK constraints: a bad row written by hand must end as a
-- recorded reason on the message, never as a failed migration or a crashed batch.
CREATE TABLE IF NOT EXISTS delivery.contractor_preferences (
    contractor_id      bigint PRIMARY KEY,
    -- Ordered channel names (sms, email, web_chat); NULL = DEFAULT_CHANNELS.
    channels           text[],
    -- Opted out of everything, or of the channels listed in opted_out_channels.
    opted_out          boolean     NOT NULL DEFAULT false,
    opted_out_channels text[]      NOT NULL DEFAULT '{}',
    opted_out_at       timestamptz,
    opt_out_source     text,
    -- IANA time zone; NULL = DEFAULT_TIMEZONE.
    timezone           text,
    -- Local quiet window; both NULL = QUIET_HOURS. start = end means none.
    quiet_start        time,
    quiet_end          time,
    -- NULL = MAX_MESSAGES_PER_DAY.
    max_per_day        integer,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Who a message is for, recorded when it is queued, so the daily cap can count what a
-- contractor was sent without reading the platform's tables.
ALTER TABLE delivery.message_state ADD COLUMN IF NOT EXISTS contractor_id bigint;

-- The daily-cap count: a contractor's sent messages in the last day, an index range scan.
CREATE INDEX IF NOT EXISTS message_state_contractor_sent_idx
    ON delivery.message_state (contractor_id, sent_at)
    WHERE state = 'sent';

-- The reconciliation sweep picks deferred rows whose time has come.
CREATE INDEX IF NOT EXISTS message_state_deferred_idx
    ON delivery.message_state (source, next_attempt_at)
    WHERE state = 'deferred';
