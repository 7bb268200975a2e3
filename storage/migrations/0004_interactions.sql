-- The agents' direct interactions (llm_agents.interactions_postgres): one
-- row per interaction and its stream of events, written before SSE listeners
-- are told, so a client that reconnects (to any agents process) replays the
-- stream from here.
--
-- "node" is the agents process that runs the interaction: when that process
-- starts again it marks what it left running as failed ("interrupted"),
-- without touching what other processes are running.

CREATE TABLE interactions (
    id text PRIMARY KEY,
    room text NOT NULL,
    agent text NOT NULL,
    user_id text NOT NULL,
    text text NOT NULL,
    status text NOT NULL,
    reply text NOT NULL DEFAULT '',
    error text,
    prompt_tokens integer,
    completion_tokens integer,
    created double precision NOT NULL,
    finished double precision,
    node text NOT NULL DEFAULT ''
);
CREATE INDEX interactions_running ON interactions (node) WHERE status = 'running';
-- The retention purge (finished interactions older than the retention).
CREATE INDEX interactions_finished ON interactions (finished) WHERE status <> 'running';

CREATE TABLE interaction_events (
    interaction text NOT NULL REFERENCES interactions (id) ON DELETE CASCADE,
    seq integer NOT NULL,
    event text NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (interaction, seq)
);
