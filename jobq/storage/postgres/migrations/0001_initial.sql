-- jobq on PostgreSQL, step 1 (issue 10): the hot table of unfinished jobs, finished
-- jobs in their history, idempotency keys, the webhook outbox, alerts and the limits
-- shared by every API process. Times are the injected clock's, passed as parameters.

-- Leases are fenced by a token drawn here at each claim (monotonic across processes).
CREATE SEQUENCE lease_token_seq;
-- Creation order (listing, FIFO among equal claim keys) and change order of deliveries.
CREATE SEQUENCE job_seq;
CREATE SEQUENCE change_seq;

-- Unfinished jobs only (waiting, queued, retry, running): small, so claims stay fast.
-- `doc` is the job's record (Job.to_record) without payload and result; the columns
-- are what the queries need, written with `doc` from the same version.
CREATE TABLE job (
    id text PRIMARY KEY,
    seq bigint NOT NULL,
    tenant_id text NOT NULL,
    type text NOT NULL,
    status text NOT NULL,
    priority smallint NOT NULL,
    sort_key double precision NOT NULL,  -- jobq.rules.jobs.claim_key: priority with aging
    next_run_at timestamptz NOT NULL,
    expires_at timestamptz,
    lease_until timestamptz,
    lease_token bigint,
    worker_id text,
    attempts integer NOT NULL,
    created_at timestamptz NOT NULL,
    finished_at timestamptz,
    last_error text,
    stored_size integer NOT NULL,
    payload bytea NOT NULL,
    result bytea,
    doc bytea NOT NULL
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

-- The claim: due claimable jobs of a tenant in claim order.
CREATE INDEX job_ready ON job (tenant_id, sort_key, seq) WHERE status IN ('queued', 'retry');
CREATE INDEX job_due ON job (next_run_at) WHERE status IN ('queued', 'retry');
CREATE INDEX job_running ON job (tenant_id) WHERE status = 'running';
CREATE INDEX job_lease ON job (lease_until) WHERE status = 'running';
CREATE INDEX job_expiry ON job (expires_at) WHERE expires_at IS NOT NULL AND attempts = 0;
CREATE INDEX job_tenant_seq ON job (tenant_id, seq);
CREATE INDEX job_seq_order ON job (seq);

-- Finished jobs (succeeded, fatal, cancelled), moved here in the transaction that ends
-- them. Partitioning by day (retention dropping partitions) is a later step.
CREATE TABLE job_history (LIKE job INCLUDING DEFAULTS);
ALTER TABLE job_history ADD PRIMARY KEY (id);
CREATE INDEX job_history_tenant_seq ON job_history (tenant_id, seq);
CREATE INDEX job_history_seq ON job_history (seq);
CREATE INDEX job_history_finished ON job_history (finished_at);
CREATE INDEX job_history_fatal ON job_history (tenant_id, seq) WHERE status = 'fatal';

-- Every job, wherever it is.
CREATE VIEW any_job AS
    SELECT * FROM job
    UNION ALL
    SELECT * FROM job_history;

-- Who waits on whom: one row per edge of `dependsOn`, removed when the dependant ends.
CREATE TABLE job_dependency (
    depends_on_id text NOT NULL,
    job_id text NOT NULL,
    PRIMARY KEY (depends_on_id, job_id)
);
CREATE INDEX job_dependency_job ON job_dependency (job_id);

-- An Idempotency-Key and the answer it was first given, as the web layer encoded it.
CREATE TABLE idempotency (
    tenant_id text NOT NULL,
    key text NOT NULL,
    fingerprint text NOT NULL,
    route text NOT NULL,
    answer bytea NOT NULL,
    job_ids text[] NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_job_ids ON idempotency USING gin (job_ids);

-- The webhook outbox and alert notifications (lane NULL: the operator's), leased to one sender.
CREATE TABLE delivery (
    id text PRIMARY KEY,
    seq bigint NOT NULL,  -- creation order
    changed bigint NOT NULL,  -- change order (the latest failure)
    job_id text,
    tenant_id text NOT NULL,
    lane text,
    status text NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    lease_owner text,
    lease_until timestamptz,
    doc bytea NOT NULL
);
CREATE INDEX delivery_due ON delivery (next_attempt_at) WHERE status = 'pending';
CREATE INDEX delivery_job ON delivery (job_id, seq);
CREATE INDEX delivery_failed ON delivery (tenant_id, changed) WHERE status = 'failed' AND job_id IS NOT NULL;

CREATE TABLE alert (
    id text PRIMARY KEY,
    tenant_id text NOT NULL,
    raised_at timestamptz NOT NULL,
    cleared_at timestamptz,
    doc bytea NOT NULL
);

-- A tenant's submit-rate token bucket (jobq.rules.ratelimit.TokenBucket), shared by API processes.
CREATE TABLE submit_bucket (
    tenant_id text PRIMARY KEY,
    rate double precision NOT NULL,
    capacity double precision NOT NULL,
    tokens double precision NOT NULL,
    updated double precision NOT NULL  -- the injected clock's seconds
);

-- Bad API keys per client address, in one-minute windows.
CREATE TABLE bad_key (
    address text PRIMARY KEY,
    window_start double precision NOT NULL,
    failures integer NOT NULL
);
