-- Evidence that a process died (issue 10): each open store holds a session advisory
-- lock (jobq's space, its own key) on a connection of its own for as long as it
-- lives, and stamps the jobs it claims with that key. A running job whose owner's
-- lock can be taken belongs to a process whose connection is gone: it is recovered
-- at once, without waiting for its lease.
ALTER TABLE job ADD COLUMN owner integer;
ALTER TABLE job_history ADD COLUMN owner integer;
CREATE OR REPLACE VIEW any_job AS
    SELECT * FROM job
    UNION ALL
    SELECT * FROM job_history;
CREATE INDEX job_owner ON job (owner) WHERE status = 'running';

-- One row per open store (a process), for operators: who is connected, since when.
CREATE TABLE worker_process (
    owner integer PRIMARY KEY,
    description text NOT NULL,
    opened_at timestamptz NOT NULL
);
