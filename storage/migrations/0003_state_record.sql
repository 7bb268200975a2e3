-- The write-behind of the two-tier store (state_versions.store_tiered):
-- changes already applied (and versioned) by the hot tier, Redis, recorded
-- here in batches, off the fan-out path. Unlike state_apply this function
-- does not count versions; it keeps the ones it is given.
--
-- A batch is recorded in one statement. The history keeps the first row
-- written for a (room, total); the latest value of a section only moves
-- forward, by partial first (a room reloaded into Redis from here keeps the
-- partials it had, so its next changes always win), then by total; the
-- room's total only grows. A late or repeated batch changes nothing. See
-- store_tiered's docstring for what that means after Redis lost data.
CREATE FUNCTION state_record(p_rooms text[], p_sections text[], p_partials bigint[],
                             p_totals bigint[], p_values json[])
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n integer;
BEGIN
    INSERT INTO history (room, total, section, partial, value)
        SELECT c.room, c.total, c.section, c.partial, c.value
        FROM unnest(p_rooms, p_sections, p_partials, p_totals, p_values)
            AS c(room, section, partial, total, value)
        ON CONFLICT (room, total) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    -- Rooms first: the same lock order as state_apply (room row, then sections).
    INSERT INTO rooms AS r (room, total)
        SELECT c.room, max(c.total)
        FROM unnest(p_rooms, p_totals) AS c(room, total)
        GROUP BY c.room
        ORDER BY c.room
        ON CONFLICT (room) DO UPDATE SET total = greatest(r.total, excluded.total);
    INSERT INTO sections AS s (room, section, partial, total, value)
        SELECT DISTINCT ON (c.room, c.section) c.room, c.section, c.partial, c.total, c.value
        FROM unnest(p_rooms, p_sections, p_partials, p_totals, p_values)
            AS c(room, section, partial, total, value)
        ORDER BY c.room, c.section, c.total DESC
        ON CONFLICT (room, section) DO UPDATE
        SET partial = excluded.partial, total = excluded.total, value = excluded.value,
            at = now()
        WHERE (s.partial, s.total) < (excluded.partial, excluded.total);
    RETURN n;
END
$$;
