-- The peer inbox, second form (room_router.inbox_postgres; the theory is in
-- room_router/inbox.py, "Gaps" and "Caps"):
-- * prev: the addressee's highest seq when a message was appended, so an
--   edge can tell a live message that continues what a connection was shown
--   from one that leaves a gap (seqs are global, so gaps are the norm);
-- * unacked_count / unacked_bytes on the cursor: what the user holds
--   unacknowledged, kept by peer_append and peer_ack, so a cap per addressee
--   is checked without counting rows on every append.
-- Both are computed here from what is stored, once.

ALTER TABLE peer_inbox ADD COLUMN prev bigint NOT NULL DEFAULT 0;
UPDATE peer_inbox m SET prev = coalesce(
    (SELECT max(p.seq) FROM peer_inbox p WHERE p.to_user = m.to_user AND p.seq < m.seq), 0);

ALTER TABLE peer_cursor
    ADD COLUMN unacked_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN unacked_bytes bigint NOT NULL DEFAULT 0;
INSERT INTO peer_cursor AS c (user_id, acked_upto, unacked_count, unacked_bytes)
    SELECT m.to_user, 0, count(*), sum(octet_length(m.body))
    FROM peer_inbox m
    WHERE m.seq > coalesce((SELECT k.acked_upto FROM peer_cursor k
                            WHERE k.user_id = m.to_user), 0)
    GROUP BY m.to_user
ON CONFLICT (user_id) DO UPDATE
    SET unacked_count = excluded.unacked_count, unacked_bytes = excluded.unacked_bytes;

-- Append under the addressee's advisory lock (as in 0002: one user's seqs
-- become visible in seq order), which now also makes prev and the cap
-- check exact: no other append to the same addressee runs in between.
-- outcome: 'new', 'duplicate' (a retry: the first message; answered even
-- when the inbox is full), 'full_messages' or 'full_bytes' (nothing stored).
-- A cap <= 0 means no cap. Over the cap by the counters, the user's
-- unacknowledged messages are recounted (and the counters corrected) before
-- the refusal, so counters that drifted never lock a user out.
CREATE FUNCTION peer_append_capped(p_to text, p_from text, p_from_name text,
                                   p_client_id text, p_body bytea, p_ts double precision,
                                   p_max_count bigint, p_max_bytes bigint,
                                   OUT outcome text, OUT o_seq bigint, OUT o_prev bigint,
                                   OUT o_from_name text, OUT o_body bytea,
                                   OUT o_ts double precision)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_count bigint;
    v_bytes bigint;
    v_size bigint := octet_length(p_body);
BEGIN
    PERFORM pg_advisory_xact_lock(1819438959, hashtext(p_to));  -- 1819438959: 'lroo'
    SELECT m.seq, m.prev, m.from_name, m.body, m.ts
        INTO o_seq, o_prev, o_from_name, o_body, o_ts
        FROM peer_inbox m
        WHERE m.from_user = p_from AND m.to_user = p_to AND m.client_id = p_client_id;
    IF FOUND THEN
        outcome := 'duplicate';
        RETURN;
    END IF;
    IF p_max_count > 0 OR p_max_bytes > 0 THEN
        SELECT c.unacked_count, c.unacked_bytes INTO v_count, v_bytes
            FROM peer_cursor c WHERE c.user_id = p_to;
        v_count := coalesce(v_count, 0);
        v_bytes := coalesce(v_bytes, 0);
        IF (p_max_count > 0 AND v_count + 1 > p_max_count)
                OR (p_max_bytes > 0 AND v_bytes + v_size > p_max_bytes) THEN
            SELECT count(*), coalesce(sum(octet_length(m.body)), 0) INTO v_count, v_bytes
                FROM peer_inbox m
                WHERE m.to_user = p_to AND m.seq > coalesce(
                    (SELECT c.acked_upto FROM peer_cursor c WHERE c.user_id = p_to), 0);
            UPDATE peer_cursor SET unacked_count = v_count, unacked_bytes = v_bytes
                WHERE user_id = p_to;
            IF p_max_count > 0 AND v_count + 1 > p_max_count THEN
                outcome := 'full_messages';
                RETURN;
            END IF;
            IF p_max_bytes > 0 AND v_bytes + v_size > p_max_bytes THEN
                outcome := 'full_bytes';
                RETURN;
            END IF;
        END IF;
    END IF;
    SELECT coalesce(max(m.seq), 0) INTO o_prev FROM peer_inbox m WHERE m.to_user = p_to;
    -- Under the lock, and the retry was looked for above: no conflict.
    INSERT INTO peer_inbox AS m (to_user, from_user, from_name, client_id, body, ts, prev)
        VALUES (p_to, p_from, p_from_name, p_client_id, p_body, p_ts, o_prev)
        RETURNING m.seq, m.from_name, m.body, m.ts INTO o_seq, o_from_name, o_body, o_ts;
    INSERT INTO peer_cursor AS c (user_id, acked_upto, unacked_count, unacked_bytes)
        VALUES (p_to, 0, 1, v_size)
        ON CONFLICT (user_id) DO UPDATE
        SET unacked_count = c.unacked_count + 1, unacked_bytes = c.unacked_bytes + v_size;
    outcome := 'new';
END
$$;

-- The 0002 function, for a process of the previous release still running
-- during a rolling deploy: the same answers, now through the new one (no
-- cap), so its appends keep prev and the counters right too.
CREATE OR REPLACE FUNCTION peer_append(p_to text, p_from text, p_from_name text,
                                       p_client_id text, p_body bytea, p_ts double precision,
                                       OUT is_new boolean, OUT o_seq bigint,
                                       OUT o_from_name text, OUT o_body bytea,
                                       OUT o_ts double precision)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r record;
BEGIN
    SELECT * INTO r FROM peer_append_capped(p_to, p_from, p_from_name, p_client_id, p_body,
                                            p_ts, 0, 0);
    is_new := r.outcome = 'new';
    o_seq := r.o_seq;
    o_from_name := r.o_from_name;
    o_body := r.o_body;
    o_ts := r.o_ts;
END
$$;

-- The acknowledgement: the cursor only moves forward; what it passes is
-- subtracted from the counters; what it passed and is older than the
-- retention is purged. Under the addressee's lock, like the append, so the
-- counters see appends and acks of one user one at a time.
CREATE FUNCTION peer_ack(p_user text, p_upto bigint, p_purge_before double precision)
RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_old bigint;
    v_count bigint;
    v_bytes bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(1819438959, hashtext(p_user));
    SELECT c.acked_upto INTO v_old FROM peer_cursor c WHERE c.user_id = p_user;
    v_old := coalesce(v_old, 0);
    IF p_upto > v_old THEN
        SELECT count(*), coalesce(sum(octet_length(m.body)), 0) INTO v_count, v_bytes
            FROM peer_inbox m WHERE m.to_user = p_user AND m.seq > v_old AND m.seq <= p_upto;
        INSERT INTO peer_cursor AS c (user_id, acked_upto) VALUES (p_user, p_upto)
            ON CONFLICT (user_id) DO UPDATE
            SET acked_upto = excluded.acked_upto,
                unacked_count = greatest(0, c.unacked_count - v_count),
                unacked_bytes = greatest(0, c.unacked_bytes - v_bytes);
    END IF;
    DELETE FROM peer_inbox WHERE to_user = p_user AND seq <= p_upto AND ts < p_purge_before;
END
$$;
