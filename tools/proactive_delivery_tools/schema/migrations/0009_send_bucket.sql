-- The providers' pace, second bucket (docs/operations.md, "Pace"). Migration 0006 gave each
-- provider one token bucket of slots: a message without a free slot reserves the next one and
-- comes back to it on SQS DelaySeconds. When the queue runs behind its schedule, held messages
-- come back after their slots, together, and each sent at once on the slot it already held:
-- the provider saw more than its burst and answered 429. Now every message that actually goes
-- also takes its cost from a second bucket of the same rate and burst (the sends), a message
-- with a reserved slot too; a reserved message that finds no send token waits a moment and
-- keeps its slot. The send bucket decides what goes now (a new message with a send token
-- goes, and takes the next slot of the schedule); the slot bucket decides when a message
-- that may not go comes back. Additive and re-runnable; the two functions are replaced whole.
ALTER TABLE delivery.provider_pace
    -- Sends: every message that goes takes its cost here. Never below minus one message's cost.
    ADD COLUMN IF NOT EXISTS send_tokens      double precision NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS send_refilled_at timestamptz      NOT NULL DEFAULT now();

-- take_provider_slots(requests, limits, horizon, probe_interval): what each message of a batch
-- may do now.
--   requests: [{"ord": n, "provider": "n8n", "cost": 1, "reserved": false}, ...] in the
--             batch's order; reserved: the message already holds a slot (it takes only send
--             tokens; when there are none it waits, keeping its slot);
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
    sendable double precision;
    needed double precision;
    wait double precision;
    probed boolean;
    at timestamptz;
BEGIN
    -- Providers in name order: two invocations always lock rows in the same order.
    FOR p IN SELECT DISTINCT w.provider FROM jsonb_to_recordset(requests) AS w(provider text) ORDER BY 1 LOOP
        INSERT INTO delivery.provider_pace (provider, tokens, send_tokens)
        VALUES (p.provider, coalesce((limits #>> ARRAY[p.provider, 'burst'])::double precision, 0),
                coalesce((limits #>> ARRAY[p.provider, 'burst'])::double precision, 0))
        ON CONFLICT (provider) DO NOTHING;
        SELECT * INTO st FROM delivery.provider_pace s WHERE s.provider = p.provider FOR UPDATE;
        -- The time the row was locked, not the transaction's start (now()): an invocation
        -- that began first but waited for the lock must not see time run backwards and
        -- take back tokens another refilled.
        at := greatest(clock_timestamp(), st.refilled_at, st.send_refilled_at);
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

        -- The slot bucket: refill since the last take, capped at the burst; then each new
        -- message in order takes its cost, those beyond what is there taking the next free
        -- slots (debt) up to the horizon. The send bucket: whatever goes now, reserved or not,
        -- takes its cost (at most a burst's worth has to be there: a message dearer than the
        -- burst goes when the bucket is full and leaves it in debt).
        available := least(lim_burst, st.tokens + lim_rate * extract(epoch FROM at - st.refilled_at));
        sendable := least(lim_burst, st.send_tokens + lim_rate * extract(epoch FROM at - st.send_refilled_at));
        spent := 0;
        FOR r IN SELECT w.ord, w.cost, coalesce(w.reserved, false) AS reserved
                 FROM jsonb_to_recordset(requests)
                      AS w(ord integer, provider text, cost double precision, reserved boolean)
                 WHERE w.provider = p.provider ORDER BY w.ord LOOP
            ord := r.ord;
            needed := least(r.cost, lim_burst) - sendable;
            IF r.reserved THEN
                IF needed <= 0 THEN
                    action := 'send'; wait_seconds := 0; reason := NULL;
                    sendable := sendable - r.cost;
                ELSE
                    -- Its slot has come but others are going now: it keeps its slot and
                    -- looks again when the sends have caught up.
                    action := 'wait'; wait_seconds := needed / lim_rate; reason := 'rate_limited';
                END IF;
            ELSE
                wait := (spent + r.cost - available) / lim_rate;
                IF needed <= 0 THEN
                    -- The provider can take it now: it goes, and takes the next slot of the
                    -- schedule too, so that the slots reserved stay as many as the messages.
                    -- (While a backlog is first walked, the messages that reserved the early
                    -- slots are behind it in the queue: the sends they would make go to those
                    -- walked now instead, and they wait for the sends when they come back.)
                    action := 'send'; wait_seconds := 0; reason := NULL;
                    spent := spent + r.cost;
                    sendable := sendable - r.cost;
                ELSIF wait <= horizon THEN
                    action := 'reserve'; wait_seconds := greatest(wait, needed / lim_rate); reason := 'rate_limited';
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
        SET tokens = available - spent, refilled_at = at,
            send_tokens = sendable, send_refilled_at = at, updated_at = now()
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
            tokens = least(s.tokens, 0), send_tokens = least(s.send_tokens, 0), updated_at = now()
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
            send_tokens = CASE WHEN p.retry_after IS NOT NULL THEN least(s.send_tokens, 0) ELSE s.send_tokens END,
            updated_at = now()
        WHERE s.provider = p.provider;
        noted := noted + 1;
    END LOOP;
    RETURN noted;
END
$$;
