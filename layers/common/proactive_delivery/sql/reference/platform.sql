-- Reference copy of the coaching platform's tables, for tests and the local demo ONLY.
-- The platform owns these tables in every real environment; `proactive-delivery migrate`
-- never applies this file (only `migrate --reference-schema` does, and it refuses in a
-- deployed stage).
CREATE TABLE IF NOT EXISTS contractors (
    id         bigserial PRIMARY KEY,
    first_name text,
    phone      text,
    email      text
);

CREATE TABLE IF NOT EXISTS ai_proactive_messages (
    id                  bigserial PRIMARY KEY,
    contractor_id       bigint NOT NULL REFERENCES contractors (id),
    message_type        text   NOT NULL,
    message_content     text   NOT NULL,
    ai_reasoning        text,
    context_data        jsonb,
    sent_at             timestamptz,
    contractor_response text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS contractor_followup_schedules (
    id               bigserial PRIMARY KEY,
    contractor_id    bigint      NOT NULL REFERENCES contractors (id),
    scheduled_time   timestamptz NOT NULL,
    followup_type    text        NOT NULL,
    message_template text        NOT NULL,
    status           text        NOT NULL DEFAULT 'scheduled',
    sent_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
