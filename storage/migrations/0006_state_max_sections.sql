-- Sections per room are capped (issue 12): state_apply with one more
-- argument, the cap. A write that would add a section to a room that has
-- p_max_sections already changes nothing and answers applied = false with
-- over_cap = true (the caller raises TooManySections). The count runs after the
-- room's row lock, so concurrent first writes of different sections from
-- many processes cannot pass the cap together.
--
-- The four-argument state_apply of 0001 stays for processes of the previous
-- release during a rolling deploy (they write without the cap).
CREATE FUNCTION state_apply(p_room text, p_section text, p_value json, p_expected bigint,
                            p_max_sections integer,
                            OUT applied boolean, OUT over_cap boolean, OUT new_partial bigint,
                            OUT new_total bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_total bigint;
    v_partial bigint;
BEGIN
    over_cap := false;
    SELECT r.total INTO v_total FROM rooms r WHERE r.room = p_room FOR UPDATE;
    IF NOT FOUND THEN
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
    IF v_partial = 0 AND
            (SELECT count(*) FROM sections s WHERE s.room = p_room) >= p_max_sections THEN
        -- A room row made just now for this refused write goes again: a
        -- refusal leaves nothing behind.
        DELETE FROM rooms r WHERE r.room = p_room AND r.total = 0;
        applied := false;
        over_cap := true;
        new_partial := 0;
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
