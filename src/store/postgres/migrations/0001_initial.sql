-- The store's tables, one per sled tree of src/store/mod.rs, with the parts the store looks
-- things up by as columns and the records themselves as JSON (readable with SQL).
-- Text keys sort byte by byte (COLLATE "C"), as sled's keys do; times that order a queue are
-- kept to the millisecond, as sled's keys keep them.

-- Journal sequence numbers, in-flight marks and webhook ids: unique in this database.
CREATE SEQUENCE nurture_ids;

-- A lead by its address folded to lower case.
CREATE TABLE leads (
    lead_key text COLLATE "C" PRIMARY KEY,
    body jsonb NOT NULL
);

-- An enrollment, its due time (the due index is this column's index: the two cannot disagree)
-- and its lease: the daemon working on it, until when (src/store/postgres/shared.rs).
CREATE TABLE enrollments (
    workflow text COLLATE "C" NOT NULL,
    lead_key text COLLATE "C" NOT NULL,
    due timestamptz,
    lease_owner text,
    lease_until timestamptz,
    body jsonb NOT NULL,
    PRIMARY KEY (workflow, lead_key)
);
-- In due order, then as sled orders its due keys (workflow, then lead).
CREATE INDEX enrollments_due ON enrollments (due, workflow, lead_key) WHERE due IS NOT NULL;
CREATE INDEX enrollments_of_lead ON enrollments (lead_key, workflow);

-- The journal: append-only, in the order written (seq).
CREATE TABLE events (
    seq bigint PRIMARY KEY,
    lead_key text COLLATE "C" NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX events_of_lead ON events (lead_key, seq);

CREATE TABLE messages (
    message_id text COLLATE "C" PRIMARY KEY,
    at timestamptz NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX messages_at ON messages (at);

-- Emails waiting to leave: the header as JSON, the MIME bytes as they are.
CREATE TABLE outbox (
    not_before timestamptz NOT NULL,
    message_id text COLLATE "C" NOT NULL,
    header jsonb NOT NULL,
    eml bytea NOT NULL,
    PRIMARY KEY (not_before, message_id)
);

-- Leads whose data changed since enrollment last looked at them.
CREATE TABLE changed (
    lead_key text COLLATE "C" PRIMARY KEY
);

-- Emails being handed to a transport, under their mark, in the order listed.
CREATE TABLE in_flight (
    mark bigint NOT NULL,
    position integer NOT NULL,
    header jsonb NOT NULL,
    eml bytea NOT NULL,
    PRIMARY KEY (mark, position)
);

-- Copies of uncertain emails, for `nurture outbox resend`.
CREATE TABLE uncertain (
    message_id text COLLATE "C" PRIMARY KEY,
    header jsonb NOT NULL,
    eml bytea NOT NULL
);

CREATE TABLE meta (
    key text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);

CREATE TABLE webhooks (
    next_attempt timestamptz NOT NULL,
    id text COLLATE "C" NOT NULL,
    body jsonb NOT NULL,
    PRIMARY KEY (next_attempt, id)
);

CREATE TABLE webhooks_failed (
    id text COLLATE "C" PRIMARY KEY,
    body jsonb NOT NULL
);

-- Sleeping daemons wake when work may have appeared: a due time written, a lead changed, an
-- email queued. Written by any client (another daemon, the CLI, `store copy`), so a trigger,
-- not the writer, sends it; PostgreSQL delivers it at commit, once per transaction.
CREATE FUNCTION nurture_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('nurture_wake', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
CREATE TRIGGER enrollments_wake AFTER INSERT OR UPDATE OF due ON enrollments
    FOR EACH STATEMENT EXECUTE FUNCTION nurture_wake();
CREATE TRIGGER changed_wake AFTER INSERT ON changed
    FOR EACH STATEMENT EXECUTE FUNCTION nurture_wake();
CREATE TRIGGER outbox_wake AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION nurture_wake();
