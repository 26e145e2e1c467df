-- The pace of each provider, shared by every deliver invocation: a token bucket (rate limit),
-- a block set by the provider's own 429 + Retry-After, and a circuit breaker. One row per
-- provider; every deliver batch reads and updates the rows of its providers in one statement
-- (take_provider_slots) and reports its attempts in its outcome statement
-- (note_provider_attempts). Functions rather than a client-side read-then-write: the row is
-- locked for the length of one call, so fifty concurrent invocations together stay under the
-- limit, and each batch still costs one round trip.
CREATE TABLE IF NOT EXISTS delivery.provider_pace (
    provider      text PRIMARY KEY,
    -- The limit in effect, as the deliver function last applied it (NULL: not limited).
    rate          double precision,
    burst         double precision,
    -- Tokens left; below zero when future slots are reserved (held messages hold them).
    tokens        double precision NOT NULL DEFAULT 0,
    refilled_at   timestamptz      NOT NULL DEFAULT now(),
    -- The provider answered 429 with Retry-After: nobody sends to it before this.
    blocked_until timestamptz,
    circuit       text             NOT NULL DEFAULT 'closed',
    open_until    timestamptz,
    -- Half-open: the one probe allowed goes out; the next may go after this.
    probe_until   timestamptz,
    -- Times it opened since it was last closed (each cool-off doubles).
    opens         integer          NOT NULL DEFAULT 0,
    opened_at     timestamptz,
    -- The last attempts' results, oldest first: true = failed transiently.
    recent        boolean[]        NOT NULL DEFAULT '{}',
    updated_at    timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT provider_pace_circuit_check CHECK (circuit IN ('closed', 'open', 'half_open'))
);

-- A message held for its provider's pace keeps its reserved slot here: when it comes back it
-- is sent without taking another token (the token was taken when the slot was reserved).
ALTER TABLE delivery.message_state ADD COLUMN IF NOT EXISTS paced_until timestamptz;

-- Which provider each attempt went to (the rate each one is actually sent at, in `status`).
ALTER TABLE delivery.attempt_log ADD COLUMN IF NOT EXISTS provider text;

-- take_provider_slots(requests, limits, horizon, probe_interval): what each message of a batch
-- may do now.
--   requests: [{"ord": n, "provider": "n8n", "cost": 1}, ...] in the batch's order; cost 0 for
--             a message that already holds a slot (only the circuit can stop it);
--   limits:   {"n8n": {"rate": 10, "burst": 5}, ...}; a provider not named is not limited;
--   horizon:  how far ahead a slot may be reserved (seconds; a held message rides on SQS
--             DelaySeconds, at most 900);
--   probe_interval: how long a half-open circuit waits for its probe's answer before the
--             next probe may go (seconds).
-- Returns one row per request: action 'send', 'probe' (the one attempt a half-open circuit
-- lets through), 'reserve' (a slot `wait_seconds` from now is this message's: hold it until
-- then) or 'wait' (no slot within the horizon, the circuit is open, or the provider asked
-- for patience: come back after `wait_seconds`), and the reason for a hold.
CREATE OR REPLACE FUNCTION delivery.take_provider_slots(
    requests jsonb, limits jsonb, horizon double precision, probe_interval double precision
)
RETURNS TABLE (ord integer, action text, wait_seconds double precision, reason text)
LANGUAGE plpgsql AS $$
DECLARE
    p record;
    r record;
    st delivery.provider_pace%ROWTYPE;
    lim_rate double precision;
    lim_burst double precision;
    available double precision;
    spent double precision;
    wait double precision;
    probed boolean;
BEGIN
    -- Providers in name order: two invocations always lock rows in the same order.
    FOR p IN SELECT DISTINCT w.provider FROM jsonb_to_recordset(requests) AS w(provider text) ORDER BY 1 LOOP
        INSERT INTO delivery.provider_pace (provider, tokens)
        VALUES (p.provider, coalesce((limits #>> ARRAY[p.provider, 'burst'])::double precision, 0))
        ON CONFLICT (provider) DO NOTHING;
        SELECT * INTO st FROM delivery.provider_pace s WHERE s.provider = p.provider FOR UPDATE;
        lim_rate := (limits #>> ARRAY[p.provider, 'rate'])::double precision;
        lim_burst := (limits #>> ARRAY[p.provider, 'burst'])::double precision;
        IF st.rate IS DISTINCT FROM lim_rate OR st.burst IS DISTINCT FROM lim_burst THEN
            UPDATE delivery.provider_pace s SET rate = lim_rate, burst = lim_burst
            WHERE s.provider = p.provider;
        END IF;

        IF st.circuit = 'open' AND st.open_until > now() THEN
            RETURN QUERY
                SELECT w.ord, 'wait'::text, extract(epoch FROM st.open_until - now())::double precision,
                       'circuit_open'::text
                FROM jsonb_to_recordset(requests) AS w(ord integer, provider text)
                WHERE w.provider = p.provider;
            CONTINUE;
        END IF;
        IF st.circuit <> 'closed' THEN
            probed := false;
            IF st.circuit = 'open' OR st.probe_until IS NULL OR st.probe_until <= now() THEN
                -- The cool-off is over: one probe now, the rest wait for its answer.
                UPDATE delivery.provider_pace s
                SET circuit = 'half_open', probe_until = now() + make_interval(secs => probe_interval),
                    updated_at = now()
                WHERE s.provider = p.provider;
                st.probe_until := now() + make_interval(secs => probe_interval);
                probed := true;
            END IF;
            FOR r IN SELECT w.ord FROM jsonb_to_recordset(requests) AS w(ord integer, provider text)
                     WHERE w.provider = p.provider ORDER BY w.ord LOOP
                IF probed THEN
                    ord := r.ord; action := 'probe'; wait_seconds := 0; reason := NULL;
                    probed := false;
                ELSE
                    ord := r.ord; action := 'wait';
                    wait_seconds := extract(epoch FROM st.probe_until - now());
                    reason := 'circuit_open';
                END IF;
                RETURN NEXT;
            END LOOP;
            CONTINUE;
        END IF;
        IF st.blocked_until > now() THEN
            RETURN QUERY
                SELECT w.ord, 'wait'::text, extract(epoch FROM st.blocked_until - now())::double precision,
                       'provider_throttled'::text
                FROM jsonb_to_recordset(requests) AS w(ord integer, provider text)
                WHERE w.provider = p.provider;
            CONTINUE;
        END IF;
        IF lim_rate IS NULL THEN
            RETURN QUERY
                SELECT w.ord, 'send'::text, 0::double precision, NULL::text
                FROM jsonb_to_recordset(requests) AS w(ord integer, provider text)
                WHERE w.provider = p.provider;
            CONTINUE;
        END IF;

        -- The token bucket: refill since the last take, capped at the burst; then each
        -- message in order takes its cost, those beyond what is there taking the next free
        -- slots (debt) up to the horizon.
        available := least(lim_burst, st.tokens + lim_rate * extract(epoch FROM now() - st.refilled_at));
        spent := 0;
        FOR r IN SELECT w.ord, w.cost FROM jsonb_to_recordset(requests) AS w(ord integer, provider text, cost double precision)
                 WHERE w.provider = p.provider ORDER BY w.ord LOOP
            ord := r.ord;
            IF r.cost <= 0 THEN
                action := 'send'; wait_seconds := 0; reason := NULL;
            ELSE
                wait := (spent + r.cost - available) / lim_rate;
                IF wait <= 0 THEN
                    action := 'send'; wait_seconds := 0; reason := NULL;
                    spent := spent + r.cost;
                ELSIF wait <= horizon THEN
                    action := 'reserve'; wait_seconds := wait; reason := 'rate_limited';
                    spent := spent + r.cost;
                ELSE
                    -- Nothing free within the horizon: no slot; look again when the horizon
                    -- has moved on by as much as this message is beyond it.
                    action := 'wait'; wait_seconds := least(horizon, wait - horizon); reason := 'rate_limited';
                END IF;
            END IF;
            RETURN NEXT;
        END LOOP;
        UPDATE delivery.provider_pace s
        SET tokens = available - spent, refilled_at = now(), updated_at = now()
        WHERE s.provider = p.provider;
    END LOOP;
END
$$;

-- note_provider_attempts(attempts, policy): the results of a batch's attempts, per provider,
-- in the order they finished: [{"provider": "n8n", "failed": true, "retry_after": 1.0}, ...]
-- (failed = failed transiently: 5xx, timeout, connection, 429). policy: {"window": 20,
-- "min_attempts": 5, "failure_share": 0.5, "cool_off": 30, "max_cool_off": 900, "enabled": true}.
-- Closed: the circuit opens when, of the last `window` results (at least `min_attempts`), a
-- share of `failure_share` failed. Half-open: a success closes it; a failure opens it again
-- for twice the previous cool-off (at most max_cool_off). A 429's Retry-After blocks the
-- provider for everyone and drops the tokens saved up.
CREATE OR REPLACE FUNCTION delivery.note_provider_attempts(attempts jsonb, policy jsonb)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    p record;
    st delivery.provider_pace%ROWTYPE;
    merged boolean[];
    failures integer;
    cool_off double precision;
    max_window integer := coalesce((policy ->> 'window')::integer, 20);
    noted integer := 0;
BEGIN
    IF NOT coalesce((policy ->> 'enabled')::boolean, true) THEN
        -- No breaker: only a 429's Retry-After is kept, for everyone.
        UPDATE delivery.provider_pace s
        SET blocked_until = greatest(s.blocked_until, now() + make_interval(secs => a.retry_after)),
            tokens = least(s.tokens, 0), updated_at = now()
        FROM (SELECT w.provider, max(w.retry_after) AS retry_after
              FROM jsonb_to_recordset(attempts) AS w(provider text, retry_after double precision)
              WHERE w.retry_after IS NOT NULL GROUP BY w.provider) a
        WHERE s.provider = a.provider;
        RETURN 0;
    END IF;
    FOR p IN
        SELECT a.provider,
               array_agg(a.failed ORDER BY a.n) AS results,
               bool_or(NOT a.failed) AS any_success,
               max(a.retry_after) AS retry_after
        FROM ROWS FROM (jsonb_to_recordset(attempts) AS (provider text, failed boolean, retry_after double precision))
             WITH ORDINALITY AS a(provider, failed, retry_after, n)
        GROUP BY a.provider
        ORDER BY a.provider
    LOOP
        INSERT INTO delivery.provider_pace (provider) VALUES (p.provider) ON CONFLICT (provider) DO NOTHING;
        SELECT * INTO st FROM delivery.provider_pace s WHERE s.provider = p.provider FOR UPDATE;
        merged := (st.recent || p.results);
        IF cardinality(merged) > max_window THEN
            merged := merged[cardinality(merged) - max_window + 1 :];
        END IF;
        SELECT count(*) FILTER (WHERE f) INTO failures FROM unnest(merged) AS f;
        cool_off := least(
            coalesce((policy ->> 'max_cool_off')::double precision, 900),
            coalesce((policy ->> 'cool_off')::double precision, 30) * power(2, st.opens)
        );
        IF st.circuit = 'half_open' THEN
            IF p.any_success THEN
                st.circuit := 'closed'; st.opens := 0; st.open_until := NULL; st.probe_until := NULL;
                merged := '{}';
            ELSE
                st.circuit := 'open'; st.open_until := now() + make_interval(secs => cool_off);
                st.opens := st.opens + 1; st.opened_at := now(); st.probe_until := NULL; merged := '{}';
            END IF;
        ELSIF st.circuit = 'closed'
              AND cardinality(merged) >= coalesce((policy ->> 'min_attempts')::integer, 5)
              AND failures >= coalesce((policy ->> 'failure_share')::double precision, 0.5) * cardinality(merged) THEN
            st.circuit := 'open'; st.open_until := now() + make_interval(secs => cool_off);
            st.opens := st.opens + 1; st.opened_at := now(); merged := '{}';
        ELSIF st.circuit = 'open' THEN
            -- Results of sends started before it opened: they change nothing.
            merged := st.recent;
        END IF;
        UPDATE delivery.provider_pace s
        SET recent = merged, circuit = st.circuit, open_until = st.open_until, probe_until = st.probe_until,
            opens = st.opens, opened_at = st.opened_at,
            blocked_until = CASE WHEN p.retry_after IS NOT NULL
                                 THEN greatest(s.blocked_until, now() + make_interval(secs => p.retry_after))
                                 ELSE s.blocked_until END,
            tokens = CASE WHEN p.retry_after IS NOT NULL THEN least(s.tokens, 0) ELSE s.tokens END,
            updated_at = now()
        WHERE s.provider = p.provider;
        noted := noted + 1;
    END LOOP;
    RETURN noted;
END
$$;
