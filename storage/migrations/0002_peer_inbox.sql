-- The peer inbox (room_router.inbox_postgres): messages kept until
-- acknowledged (and a while after, for deduplication of retries), and each
-- user's acknowledgement cursor.

CREATE TABLE peer_inbox (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    to_user text NOT NULL,
    from_user text NOT NULL,
    from_name text NOT NULL,
    client_id text NOT NULL,
    body bytea NOT NULL,              -- msgpack, as the embedded inbox keeps it
    ts double precision NOT NULL,
    UNIQUE (from_user, to_user, client_id)
);
CREATE INDEX peer_inbox_to ON peer_inbox (to_user, seq);

CREATE TABLE peer_cursor (
    user_id text PRIMARY KEY,
    acked_upto bigint NOT NULL
);

-- Appends in one round trip. A reader pages an inbox by seq and the user
-- acknowledges a cursor, so for one addressee seqs must become visible in
-- seq order: a seq taken by one transaction and committed after a higher one
-- would be skipped by a cursor already past it. The addressee's advisory
-- lock, held from before the seq is drawn until the commit, makes that so
-- (different addressees do not wait for each other, barring hash collisions).
-- A retry (same sender, addressee and client id) answers the first message.
CREATE FUNCTION peer_append(p_to text, p_from text, p_from_name text, p_client_id text,
                            p_body bytea, p_ts double precision,
                            OUT is_new boolean, OUT o_seq bigint, OUT o_from_name text,
                            OUT o_body bytea, OUT o_ts double precision)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1819438959, hashtext(p_to));  -- 1819438959: 'lroo'
    LOOP
        INSERT INTO peer_inbox AS m (to_user, from_user, from_name, client_id, body, ts)
            VALUES (p_to, p_from, p_from_name, p_client_id, p_body, p_ts)
            ON CONFLICT (from_user, to_user, client_id) DO NOTHING
            RETURNING m.seq, m.from_name, m.body, m.ts INTO o_seq, o_from_name, o_body, o_ts;
        is_new := FOUND;
        IF is_new THEN
            RETURN;
        END IF;
        SELECT m.seq, m.from_name, m.body, m.ts INTO o_seq, o_from_name, o_body, o_ts
            FROM peer_inbox m
            WHERE m.from_user = p_from AND m.to_user = p_to AND m.client_id = p_client_id;
        IF FOUND THEN
            RETURN;
        END IF;
        -- The first message was purged between the two statements: store anew.
    END LOOP;
END
$$;
