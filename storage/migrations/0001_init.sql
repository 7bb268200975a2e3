-- The durable state store: rooms with their total version, the latest value
-- of each section with its partial version, and the history of every
-- applied change.
--
-- Values are JSON, kept as the text the store wrote (type json, not jsonb):
-- jsonb rewrites numbers as decimals (the float 1e23 would read back as the
-- int 100000000000000000000000, which is another number to Python and too big
-- for msgpack) and refuses U+0000 in strings, and the store only ever writes
-- and reads whole values. Cast to jsonb to query them.

-- One row per database life: 'epoch' changes only when the database is made
-- anew, so versions from before a wipe are never compared with versions after.
CREATE TABLE meta (
    key text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO meta (key, value) VALUES ('epoch', left(md5(gen_random_uuid()::text), 16));

-- The room's row is the lock every apply to that room takes.
CREATE TABLE rooms (
    room text PRIMARY KEY,
    total bigint NOT NULL CHECK (total >= 0)
);

CREATE TABLE sections (
    room text NOT NULL,
    section text NOT NULL,
    partial bigint NOT NULL CHECK (partial > 0),
    total bigint NOT NULL,            -- the room's total when this value was set
    value json NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room, section)
);

CREATE TABLE history (
    room text NOT NULL,
    total bigint NOT NULL,
    section text NOT NULL,
    partial bigint NOT NULL,
    value json NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room, total)
);
-- A section's value at an older total (snapshot_at), newest first.
CREATE INDEX history_section ON history (room, section, total DESC);

-- Applies one change in one round trip and holds the room's lock only for the
-- function's few statements. In a VOLATILE plpgsql function each statement
-- takes a new snapshot, so the section read after the lock sees every apply
-- committed before it. A compare-and-set that does not match changes nothing
-- and answers applied = false with the section's current partial and the
-- room's total (the caller raises VersionConflict).
CREATE FUNCTION state_apply(p_room text, p_section text, p_value json, p_expected bigint,
                            OUT applied boolean, OUT new_partial bigint, OUT new_total bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_total bigint;
    v_partial bigint;
BEGIN
    SELECT r.total INTO v_total FROM rooms r WHERE r.room = p_room FOR UPDATE;
    IF NOT FOUND THEN
        -- Two first applies race here: one inserts, the other waits for it
        -- to commit, does nothing, and then locks the committed row.
        INSERT INTO rooms AS r (room, total) VALUES (p_room, 0) ON CONFLICT (room) DO NOTHING;
        SELECT r.total INTO STRICT v_total FROM rooms r WHERE r.room = p_room FOR UPDATE;
    END IF;
    SELECT s.partial INTO v_partial FROM sections s
        WHERE s.room = p_room AND s.section = p_section;
    v_partial := coalesce(v_partial, 0);
    IF p_expected IS NOT NULL AND p_expected <> v_partial THEN
        applied := false;
        new_partial := v_partial;
        new_total := v_total;
        RETURN;
    END IF;
    v_partial := v_partial + 1;
    v_total := v_total + 1;
    UPDATE rooms r SET total = v_total WHERE r.room = p_room;
    INSERT INTO sections AS s (room, section, partial, total, value)
        VALUES (p_room, p_section, v_partial, v_total, p_value)
        ON CONFLICT (room, section) DO UPDATE
        SET partial = excluded.partial, total = excluded.total, value = excluded.value,
            at = excluded.at;
    INSERT INTO history (room, total, section, partial, value)
        VALUES (p_room, v_total, p_section, v_partial, p_value);
    applied := true;
    new_partial := v_partial;
    new_total := v_total;
END
$$;
