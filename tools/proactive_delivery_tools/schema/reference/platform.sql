-- Reference copy of the coaching platform's tables, for tests and the local demo ONLY.
-- The platform owns these tables in every real environment; `proactive-delivery migrate`
-- never applies this file (only `migrate --reference-schema` does, and it refuses in a
-- deployed stage).
--
-- Faithful to the platform as it runs (docs/platform.md): every timestamp is
-- `timestamp WITHOUT time zone` holding UTC wall-clock time, ids are serial ints, phones are
-- stored as entered, follow-up status is a free varchar with no CHECK and no default.
-- Only the contractors columns that delivery reads are reproduced (the real table has ~70).

CREATE TABLE IF NOT EXISTS contractors (
    id                        serial PRIMARY KEY,
    first_name                varchar(100),
    last_name                 varchar(100),
    name                      varchar(255),
    email                     varchar(255) NOT NULL UNIQUE,
    phone                     varchar(20),
    timezone                  varchar(50),
    sms_opt_in                boolean,
    communication_preferences jsonb,
    has_ai_access             boolean DEFAULT false,
    ai_coach_opt_in           boolean DEFAULT false,
    opted_in_coaching         boolean DEFAULT false,
    created_at                timestamp DEFAULT now(),
    updated_at                timestamp DEFAULT now()
);

-- What follow-ups reference: an action item (skip_if_completed reads its status) and an event.
CREATE TABLE IF NOT EXISTS contractor_action_items (
    id            serial PRIMARY KEY,
    contractor_id integer NOT NULL REFERENCES contractors (id) ON DELETE CASCADE,
    title         varchar(255) NOT NULL,
    status        varchar(50) DEFAULT 'pending',
    completed_at  timestamp,
    created_at    timestamp DEFAULT now(),
    updated_at    timestamp DEFAULT now()
);

CREATE TABLE IF NOT EXISTS events (
    id         serial PRIMARY KEY,
    name       varchar(255) NOT NULL,
    date       date,
    created_at timestamp DEFAULT now()
);

-- The platform's own migration (14 columns).
CREATE TABLE IF NOT EXISTS ai_proactive_messages (
    id                     serial PRIMARY KEY,
    contractor_id          integer NOT NULL REFERENCES contractors (id) ON DELETE CASCADE,
    message_type           text NOT NULL CHECK (message_type IN (
        'check_in',
        'milestone_follow_up',
        'resource_suggestion',
        'encouragement',
        'course_correction',
        'celebration'
    )),
    message_content        text NOT NULL,
    ai_reasoning           text NOT NULL,
    context_data           jsonb,
    sent_at                timestamp,
    contractor_response    text,
    response_received_at   timestamp,
    conversation_continued boolean DEFAULT false,
    outcome_rating         integer CHECK (outcome_rating >= 1 AND outcome_rating <= 5),
    led_to_action          boolean DEFAULT false,
    created_at             timestamp DEFAULT now(),
    updated_at             timestamp DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_ai_proactive_messages_contractor ON ai_proactive_messages (contractor_id);
CREATE INDEX IF NOT EXISTS idx_ai_proactive_messages_sent_at ON ai_proactive_messages (sent_at);

-- 21 columns, reconstructed from the platform's verified column lists (it ships no DDL).
-- No defaults: the platform's inserts always give status = 'scheduled', created_at, updated_at.
CREATE TABLE IF NOT EXISTS contractor_followup_schedules (
    id                       serial PRIMARY KEY,
    contractor_id            integer NOT NULL REFERENCES contractors (id) ON DELETE CASCADE,
    action_item_id           integer REFERENCES contractor_action_items (id) ON DELETE SET NULL,
    event_id                 integer REFERENCES events (id) ON DELETE SET NULL,
    scheduled_time           timestamp NOT NULL,
    followup_type            varchar(100) NOT NULL CHECK (followup_type IN (
        'check_in',
        'reminder',
        'status_update',
        'offer_help',
        'completion_confirmation',
        'event_recap',
        'post_event_survey',
        'partner_introduction',
        'resource_recommendation'
    )),
    message_template         text,
    message_tone             varchar(50),
    status                   varchar(50),
    sent_at                  timestamp,
    response_received_at     timestamp,
    response_text            text,
    ai_should_personalize    boolean,
    ai_context_hints         jsonb,
    skip_if_completed        boolean,
    is_recurring             boolean,
    recurrence_interval_days integer,
    next_occurrence_id       integer REFERENCES contractor_followup_schedules (id) ON DELETE SET NULL,
    created_at               timestamp,
    updated_at               timestamp,
    sent_by                  varchar(100)
);

CREATE INDEX IF NOT EXISTS idx_followup_schedules_contractor ON contractor_followup_schedules (contractor_id);
CREATE INDEX IF NOT EXISTS idx_followup_schedules_status_time
    ON contractor_followup_schedules (status, scheduled_time);
