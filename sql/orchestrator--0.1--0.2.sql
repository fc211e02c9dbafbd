/* orchestrator--0.1--0.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION orchestrator UPDATE TO '0.2'" to load this file. \quit

------------------------------------------------------------------------
-- Owners survive a dump and restore into another cluster.  A role OID
-- means something only in the cluster that assigned it, and pg_dump copies
-- the catalog's OIDs as numbers: each DAG now also records its owner's
-- name and the cluster (its system identifier) the OID belongs to.  In
-- another cluster, the scheduler maps each DAG to the role of the same
-- name, or to no one; until then, and for an owner that is no one,
-- nobody but a superuser sees the DAG and its tasks do not run.
------------------------------------------------------------------------

CREATE FUNCTION orchestrator.system_identifier()
RETURNS bigint
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'orch_system_identifier';

ALTER TABLE orchestrator.dag
	ALTER COLUMN owner DROP NOT NULL,
	ADD COLUMN owner_name name,
	ADD COLUMN owner_sysid bigint;
UPDATE orchestrator.dag d SET owner_name = r.rolname
  FROM pg_catalog.pg_roles r WHERE r.oid = d.owner;
UPDATE orchestrator.dag SET owner_sysid = orchestrator.system_identifier();
ALTER TABLE orchestrator.dag
	ALTER COLUMN owner_sysid SET DEFAULT orchestrator.system_identifier(),
	ALTER COLUMN owner_sysid SET NOT NULL;
COMMENT ON COLUMN orchestrator.dag.owner IS 'OID of the role that owns the DAG (NULL: no one); its tasks run as this role';
COMMENT ON COLUMN orchestrator.dag.owner_name IS 'Name of the owner, to find it again after a restore into another cluster';
COMMENT ON COLUMN orchestrator.dag.owner_sysid IS 'System identifier of the cluster whose role OID "owner" is';

-- whether the current role owns a DAG, in this cluster
CREATE FUNCTION orchestrator.owned(owner oid, owner_sysid bigint)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
RETURN owner = orchestrator.current_role_oid()
   AND owner_sysid = orchestrator.system_identifier();

ALTER POLICY dag_owner ON orchestrator.dag
	USING (orchestrator.owned(owner, owner_sysid))
	WITH CHECK (orchestrator.owned(owner, owner_sysid));
ALTER POLICY task_owner ON orchestrator.task
	USING (EXISTS (SELECT 1 FROM orchestrator.dag d
				   WHERE d.dag_id = task.dag_id
					 AND orchestrator.owned(d.owner, d.owner_sysid)));
ALTER POLICY dag_run_owner ON orchestrator.dag_run
	USING (EXISTS (SELECT 1 FROM orchestrator.dag d
				   WHERE d.dag_id = dag_run.dag_id
					 AND orchestrator.owned(d.owner, d.owner_sysid)));
ALTER POLICY task_instance_owner ON orchestrator.task_instance
	USING (EXISTS (SELECT 1 FROM orchestrator.dag_run dr
				   JOIN orchestrator.dag d ON d.dag_id = dr.dag_id
				   WHERE dr.run_id = task_instance.run_id
					 AND orchestrator.owned(d.owner, d.owner_sysid)));
ALTER POLICY artifact_owner ON orchestrator.artifact
	USING (EXISTS (SELECT 1 FROM orchestrator.dag_run dr
				   JOIN orchestrator.dag d ON d.dag_id = dr.dag_id
				   WHERE dr.run_id = artifact.run_id
					 AND orchestrator.owned(d.owner, d.owner_sysid)));
ALTER POLICY log_owner ON orchestrator.log
	USING (EXISTS (SELECT 1 FROM orchestrator.dag_run dr
				   JOIN orchestrator.dag d ON d.dag_id = dr.dag_id
				   WHERE dr.run_id = log.run_id
					 AND orchestrator.owned(d.owner, d.owner_sysid)));

------------------------------------------------------------------------
-- Callbacks are claimed before they run, like tasks: a callback whose
-- worker died (or was stopped at callback_timeout) is dropped, not run
-- again in a loop.
------------------------------------------------------------------------

ALTER TABLE orchestrator.callback
	ADD COLUMN worker_pid integer,
	ADD COLUMN started_at timestamptz;

------------------------------------------------------------------------
-- Progress shows running callbacks too ("what": task, or the callback's
-- kind), and only the calling role's own (the function filters).
------------------------------------------------------------------------

DROP VIEW orchestrator.progress;
DROP FUNCTION orchestrator.worker_progress();

CREATE FUNCTION orchestrator.worker_progress(OUT pid integer, OUT run_id bigint,
											 OUT task_id text, OUT what text,
											 OUT started_at timestamptz,
											 OUT bytes_read bigint, OUT rows_loaded bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'orch_worker_progress';

CREATE VIEW orchestrator.progress WITH (security_invoker = true) AS
SELECT p.run_id,
	   r.dag_id,
	   p.task_id,
	   p.what,
	   p.pid AS worker_pid,
	   p.started_at,
	   p.bytes_read,
	   p.rows_loaded,
	   round((p.bytes_read / nullif(extract(epoch FROM clock_timestamp() - p.started_at), 0))::numeric)
		   AS bytes_per_second,
	   round((p.rows_loaded / nullif(extract(epoch FROM clock_timestamp() - p.started_at), 0))::numeric)
		   AS rows_per_second
  FROM orchestrator.worker_progress() p
  JOIN orchestrator.dag_runs r ON r.run_id = p.run_id;

GRANT SELECT ON orchestrator.progress TO PUBLIC;

------------------------------------------------------------------------
-- Workers decide their own tasks' downstream (state.c).  A task instance
-- that is ready but finds no room under its DAG's max_active_tasks stays
-- scheduled with ready_at set; a worker whose task ends queues the oldest
-- such instances of its DAG.  The counts of a run's active and unfinished
-- instances, and the search for held-back ones, go through small partial
-- indexes.
------------------------------------------------------------------------

ALTER TABLE orchestrator.task_instance ADD COLUMN ready_at timestamptz;
COMMENT ON COLUMN orchestrator.task_instance.ready_at IS
	'When its trigger rule let it run while its DAG had no room under max_active_tasks: it is queued when a task of the DAG ends';

CREATE INDEX task_instance_unfinished_idx ON orchestrator.task_instance (run_id, state)
	WHERE state IN ('scheduled', 'queued', 'running', 'up_for_retry', 'up_for_reschedule');
-- the active runs, and a DAG's (max_active_runs, max_active_tasks), never
-- its history; one index for both, so that no plan reads every running run
-- to find one DAG's
DROP INDEX orchestrator.dag_run_state_idx;
CREATE INDEX dag_run_state_idx ON orchestrator.dag_run (state, dag_id)
	WHERE state IN ('queued', 'running');
-- the logical dates a DAG's manual, backfill and asset runs hold: the
-- scheduler goes past those intervals (the scheduled runs, most of the
-- table, are not in it)
CREATE INDEX dag_run_unscheduled_idx ON orchestrator.dag_run (dag_id, logical_date)
	WHERE run_type <> 'scheduled';
-- a run's queued and running instances (a DAG's room under
-- max_active_tasks is counted run by run), and every running one: keyed
-- (state, run_id), so that counting one run's reads its own entries, even
-- by a plan made while statistics said nothing was queued (by (state)
-- alone, each count read every queued instance of every run)
DROP INDEX orchestrator.task_instance_active_idx;
CREATE INDEX task_instance_active_idx ON orchestrator.task_instance (state, run_id)
	WHERE state IN ('queued', 'running');
-- a finished task's downstream tasks, in its own DAG only: one key per edge,
-- "dag_id task_id" (an id has no space), so that a name many DAGs share
-- does not bring them all
CREATE FUNCTION orchestrator.upstream_keys(dag_id text, upstream text[])
RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog
AS $$ SELECT pg_catalog.array_agg(pg_catalog.textcat(pg_catalog.textcat($1, ' '), u))
      FROM pg_catalog.unnest($2) AS u $$;
COMMENT ON FUNCTION orchestrator.upstream_keys(text, text[]) IS
	'The keys of the index of a task''s edges from its upstream tasks (internal)';
CREATE INDEX task_downstream_idx ON orchestrator.task
	USING gin (orchestrator.upstream_keys(dag_id, upstream));
-- the claim: the oldest queued instance, in the claim's order, without a sort
CREATE INDEX task_instance_queue_idx ON orchestrator.task_instance (queued_at, run_id, task_id)
	WHERE state = 'queued';

------------------------------------------------------------------------
-- Owners are mapped when something they map from changes, not once a
-- minute (owners.c): roles, through a utility hook, and rows of another
-- cluster inserted into orchestrator.dag (a restore), through this trigger.
------------------------------------------------------------------------

CREATE FUNCTION orchestrator.dag_rows_inserted() RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'orch_dag_rows_inserted';
REVOKE ALL ON FUNCTION orchestrator.dag_rows_inserted() FROM PUBLIC;

-- (only rows of another cluster: create_dag's own do not need mapping)
CREATE TRIGGER dag_rows_inserted AFTER INSERT ON orchestrator.dag
	FOR EACH ROW WHEN (NEW.owner_sysid IS DISTINCT FROM orchestrator.system_identifier())
	EXECUTE FUNCTION orchestrator.dag_rows_inserted();

-- A scheduler lists every DAG only when definitions changed, however they
-- changed (the API, a superuser's own UPDATE, a restore); between such
-- changes it looks only at the DAGs it knows are due (scheduler.c).
CREATE FUNCTION orchestrator.definitions_changed() RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'orch_definitions_changed';
REVOKE ALL ON FUNCTION orchestrator.definitions_changed() FROM PUBLIC;

CREATE TRIGGER definitions_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
	ON orchestrator.dag FOR EACH STATEMENT
	EXECUTE FUNCTION orchestrator.definitions_changed();
CREATE TRIGGER definitions_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
	ON orchestrator.task FOR EACH STATEMENT
	EXECUTE FUNCTION orchestrator.definitions_changed();

-- Loads that real data needs (copy_into):
--   on_error => 'skip' sets bad rows aside in orchestrator.rejects, up to
--   reject_limit; mode => 'partition' loads the run's data interval into
--   the partition of exactly that range; "create" is now create_table (a
--   spec written under 0.1 with "create" still runs).
------------------------------------------------------------------------

-- The rows a load set aside, written in the task's transaction (so they
-- commit with its rows and state, or not at all).  line_number counts as
-- COPY does, the header being line 1; raw_line and error are cut at 8 kB.
CREATE TABLE orchestrator.rejects (
	run_id bigint NOT NULL,
	task_id text NOT NULL,
	try_number integer NOT NULL,
	line_number bigint NOT NULL,
	raw_line text NOT NULL,
	error text NOT NULL,
	sqlstate text NOT NULL,
	PRIMARY KEY (run_id, task_id, try_number, line_number),
	FOREIGN KEY (run_id, task_id) REFERENCES orchestrator.task_instance ON DELETE CASCADE
);
COMMENT ON TABLE orchestrator.rejects IS
	'The rows copy_into(on_error => ''skip'') set aside: which line of which try, and why';

ALTER TABLE orchestrator.rejects ENABLE ROW LEVEL SECURITY;
CREATE POLICY rejects_owner ON orchestrator.rejects
	USING (EXISTS (SELECT 1 FROM orchestrator.dag_run dr
				   JOIN orchestrator.dag d ON d.dag_id = dr.dag_id
				   WHERE dr.run_id = rejects.run_id
					 AND orchestrator.owned(d.owner, d.owner_sysid)));
GRANT SELECT ON orchestrator.rejects TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('orchestrator.rejects', '');

-- how many rows the try set aside (NULL for a task that loads nothing)
CREATE OR REPLACE VIEW orchestrator.task_instances WITH (security_invoker = true) AS
SELECT ti.run_id,
	   r.dag_id,
	   ti.task_id,
	   ti.state,
	   ti.try_number,
	   ti.max_tries,
	   ti.queued_at,
	   ti.started_at,
	   ti.finished_at,
	   ti.finished_at - ti.started_at AS duration,
	   ti.error,
	   ti.worker_pid,
	   ti.rows_loaded,
	   ti.cached,
	   CASE WHEN ti.rows_loaded IS NOT NULL THEN
		   (SELECT count(*) FROM orchestrator.rejects rj
			 WHERE rj.run_id = ti.run_id AND rj.task_id = ti.task_id
			   AND rj.try_number = ti.try_number)
	   END AS rows_rejected
  FROM orchestrator.task_instance ti
  JOIN orchestrator.dag_run r USING (run_id);

DROP FUNCTION orchestrator.copy_into(text, text, text, text, boolean, text, text, text, text, boolean, text);
CREATE FUNCTION orchestrator.copy_into(target text,
									   input text DEFAULT NULL,
									   url text DEFAULT NULL,
									   format text DEFAULT 'csv',
									   header boolean DEFAULT true,
									   delimiter text DEFAULT NULL,
									   null_string text DEFAULT NULL,
									   compression text DEFAULT 'auto',
									   mode text DEFAULT 'append',
									   create_table boolean DEFAULT false,
									   columns text DEFAULT NULL,
									   on_error text DEFAULT 'stop',
									   reject_limit bigint DEFAULT NULL,
									   partition_by text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql STABLE
RETURN orchestrator.validate_operator(
	pg_catalog.jsonb_build_object('operator', 'copy_into', 'target', target,
								  'input', input, 'url', url,
								  'format', format, 'header', header,
								  'delimiter', delimiter,
								  'null_string', null_string,
								  'compression', compression, 'mode', mode,
								  'create_table', create_table, 'columns', columns,
								  'on_error', on_error, 'reject_limit', reject_limit,
								  'partition_by', partition_by));


------------------------------------------------------------------------
-- One install serves every database of the cluster (issue 12): the
-- launcher starts a scheduler in each database with the extension, and
-- they share orchestrator.max_workers.  scheduler_status() reads their
-- entries in shared memory: a superuser sees every database's scheduler,
-- other roles their own database's.
------------------------------------------------------------------------

CREATE FUNCTION orchestrator.scheduler_status(OUT datname name, OUT pid integer,
	OUT started_at timestamptz, OUT last_pass timestamptz, OUT workers integer,
	OUT queued integer, OUT max_workers_per_database integer)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'orch_scheduler_status';
COMMENT ON FUNCTION orchestrator.scheduler_status() IS
	'The running schedulers (a superuser: of every database; others: of this one), from shared memory';

CREATE VIEW orchestrator.schedulers WITH (security_invoker = true) AS
SELECT s.datname,
	   s.pid,
	   s.started_at,
	   s.last_pass,
	   s.workers,
	   s.queued,
	   s.max_workers_per_database
  FROM orchestrator.scheduler_status() s;
COMMENT ON VIEW orchestrator.schedulers IS
	'The schedulers the launcher runs: database, pid, when started, last pass, task workers in use, work waiting, per-database cap';

GRANT SELECT ON orchestrator.schedulers TO PUBLIC;

------------------------------------------------------------------------
-- Dynamic task mapping (issue 15): a task with "expand" (a JSON array) or
-- "expand_query" (a query run as the DAG's owner when the task becomes
-- ready) runs one instance per element; a task that reads a mapped
-- task's artifact is mapped the same way.  Instances are keyed by
-- (run_id, task_id, map_index).  Internally an unmapped instance has
-- map_index -1, as in Airflow: a key column cannot be NULL, and -1 keeps
-- "one unmapped instance per task" a unique key that NULL would not.
-- Every view shows map_index as NULL when not mapped.  Rows written under
-- 0.1 (instances and all that refers to them) take -1 by default.
------------------------------------------------------------------------

ALTER TABLE orchestrator.task
	ADD COLUMN expand jsonb CHECK (jsonb_typeof(expand) = 'array'),
	ADD COLUMN expand_query text,
	ADD CONSTRAINT task_expand_one CHECK (expand IS NULL OR expand_query IS NULL);
COMMENT ON COLUMN orchestrator.task.expand IS
	'A JSON array: one task instance per element (dynamic task mapping)';
COMMENT ON COLUMN orchestrator.task.expand_query IS
	'A query run as the DAG''s owner when the task becomes ready: one task instance per row';

ALTER TABLE orchestrator.artifact DROP CONSTRAINT artifact_run_id_task_id_fkey;
ALTER TABLE orchestrator.log DROP CONSTRAINT log_run_id_task_id_fkey;
ALTER TABLE orchestrator.rejects DROP CONSTRAINT rejects_run_id_task_id_fkey;

ALTER TABLE orchestrator.task_instance
	ADD COLUMN map_index integer NOT NULL DEFAULT -1 CHECK (map_index >= -1),
	ADD COLUMN map_item jsonb,
	DROP CONSTRAINT task_instance_pkey,
	ADD PRIMARY KEY (run_id, task_id, map_index);
COMMENT ON COLUMN orchestrator.task_instance.map_index IS
	'The element of a mapped task this instance runs (0, 1, ...); -1: not mapped (NULL in the views)';
COMMENT ON COLUMN orchestrator.task_instance.map_item IS
	'The element of a mapped instance, {{ item }} in its templates';

ALTER TABLE orchestrator.artifact
	ADD COLUMN map_index integer NOT NULL DEFAULT -1,
	DROP CONSTRAINT artifact_pkey,
	ADD PRIMARY KEY (run_id, task_id, map_index),
	ADD FOREIGN KEY (run_id, task_id, map_index) REFERENCES orchestrator.task_instance ON DELETE CASCADE;
ALTER TABLE orchestrator.log
	ADD COLUMN map_index integer NOT NULL DEFAULT -1,
	ADD FOREIGN KEY (run_id, task_id, map_index) REFERENCES orchestrator.task_instance ON DELETE CASCADE;
DROP INDEX orchestrator.log_run_task_idx;
CREATE INDEX log_run_task_idx ON orchestrator.log (run_id, task_id, map_index, try_number);
ALTER TABLE orchestrator.rejects
	ADD COLUMN map_index integer NOT NULL DEFAULT -1,
	DROP CONSTRAINT rejects_pkey,
	ADD PRIMARY KEY (run_id, task_id, map_index, try_number, line_number),
	ADD FOREIGN KEY (run_id, task_id, map_index) REFERENCES orchestrator.task_instance ON DELETE CASCADE;
ALTER TABLE orchestrator.callback
	ADD COLUMN map_index integer;
COMMENT ON COLUMN orchestrator.callback.map_index IS
	'The mapped instance the callback follows (-1: not mapped; NULL: the run''s own)';

CREATE OR REPLACE VIEW orchestrator.task_instances WITH (security_invoker = true) AS
SELECT ti.run_id,
	   r.dag_id,
	   ti.task_id,
	   ti.state,
	   ti.try_number,
	   ti.max_tries,
	   ti.queued_at,
	   ti.started_at,
	   ti.finished_at,
	   ti.finished_at - ti.started_at AS duration,
	   ti.error,
	   ti.worker_pid,
	   ti.rows_loaded,
	   ti.cached,
	   CASE WHEN ti.rows_loaded IS NOT NULL THEN
		   (SELECT count(*) FROM orchestrator.rejects rj
			 WHERE rj.run_id = ti.run_id AND rj.task_id = ti.task_id
			   AND rj.map_index = ti.map_index
			   AND rj.try_number = ti.try_number)
	   END AS rows_rejected,
	   nullif(ti.map_index, -1) AS map_index,
	   ti.map_item
  FROM orchestrator.task_instance ti
  JOIN orchestrator.dag_run r USING (run_id);

CREATE OR REPLACE VIEW orchestrator.artifacts WITH (security_invoker = true) AS
SELECT a.run_id,
	   r.dag_id,
	   a.task_id,
	   a.size,
	   a.sha256,
	   a.content_type,
	   a.http_status,
	   a.url,
	   a.created_at,
	   a.loid,
	   nullif(a.map_index, -1) AS map_index
  FROM orchestrator.artifact a
  JOIN orchestrator.dag_run r USING (run_id);

CREATE OR REPLACE VIEW orchestrator.task_log WITH (security_invoker = true) AS
SELECT l.run_id,
	   r.dag_id,
	   l.task_id,
	   l.try_number,
	   l.logged_at,
	   l.level,
	   l.message,
	   l.id,
	   nullif(l.map_index, -1) AS map_index
  FROM orchestrator.log l
  JOIN orchestrator.dag_run r USING (run_id);

-- the running try's instance: map_index (NULL when not mapped)
DROP VIEW orchestrator.progress;
DROP FUNCTION orchestrator.worker_progress();

CREATE FUNCTION orchestrator.worker_progress(OUT pid integer, OUT run_id bigint,
											 OUT task_id text, OUT what text,
											 OUT started_at timestamptz,
											 OUT bytes_read bigint, OUT rows_loaded bigint,
											 OUT map_index integer)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'orch_worker_progress';

CREATE VIEW orchestrator.progress WITH (security_invoker = true) AS
SELECT p.run_id,
	   r.dag_id,
	   p.task_id,
	   p.what,
	   p.pid AS worker_pid,
	   p.started_at,
	   p.bytes_read,
	   p.rows_loaded,
	   round((p.bytes_read / nullif(extract(epoch FROM clock_timestamp() - p.started_at), 0))::numeric)
		   AS bytes_per_second,
	   round((p.rows_loaded / nullif(extract(epoch FROM clock_timestamp() - p.started_at), 0))::numeric)
		   AS rows_per_second,
	   p.map_index
  FROM orchestrator.worker_progress() p
  JOIN orchestrator.dag_runs r ON r.run_id = p.run_id;

GRANT SELECT ON orchestrator.progress TO PUBLIC;

DROP FUNCTION orchestrator.clear_task(bigint, text, boolean);
CREATE FUNCTION orchestrator.clear_task(run_id bigint, task_id text, downstream boolean DEFAULT true,
										map_index integer DEFAULT NULL)
RETURNS integer
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_clear_task';
COMMENT ON FUNCTION orchestrator.clear_task(bigint, text, boolean, integer) IS
	'Runs a task (one mapped instance of it, or all) and its downstream tasks of a run again, reopening the run; returns how many task instances were cleared';

------------------------------------------------------------------------
-- Pools and priorities (issue 15).
--
-- A pool bounds how many task instances run at once, across all DAGs and
-- owners: a superuser creates it (create_pool) and grants its use to DAG
-- owners (grant_pool); add_task(..., pool, pool_slots) puts a task in it.
-- A ready instance is queued only while its pool has room (counted under
-- the pool's row lock, like max_active_tasks under the DAG's); otherwise
-- it waits, scheduled with ready_at set, holding no worker, and the worker
-- of a pooled task that ends queues the next waiter of its pool (pool.c).
--
-- Priorities: add_task(..., priority_weight, weight_rule) with Airflow's
-- rules; task.priority_weight_total is the effective weight.  A queued
-- instance is claimed in the order of claim_at: the time it became ready,
-- minus its effective weight times orchestrator.priority_weight_age (so
-- weight counts first, then age, and an old task of low weight is claimed
-- before tasks that become ready long enough after it, whatever their
-- weight: no starvation).  The claim walks an index on claim_at.
------------------------------------------------------------------------

CREATE TABLE orchestrator.pool (
	pool text PRIMARY KEY,
	slots integer NOT NULL CHECK (slots > 0),
	description text,
	created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE orchestrator.pool IS
	'Pools: at most "slots" task instances (counted in pool_slots) of all DAGs run at once in each; see the view orchestrator.pools';

-- the roles (OIDs of this cluster) a superuser let use a pool
CREATE TABLE orchestrator.pool_grant (
	pool text NOT NULL REFERENCES orchestrator.pool ON DELETE CASCADE,
	grantee oid NOT NULL,
	PRIMARY KEY (pool, grantee)
);
COMMENT ON TABLE orchestrator.pool_grant IS
	'Which roles may put their tasks in which pool (grant_pool, revoke_pool)';

-- internal: read through the view and the functions only
ALTER TABLE orchestrator.pool ENABLE ROW LEVEL SECURITY;
ALTER TABLE orchestrator.pool_grant ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('orchestrator.pool', '');
SELECT pg_catalog.pg_extension_config_dump('orchestrator.pool_grant', '');

ALTER TABLE orchestrator.task
	ADD COLUMN pool text REFERENCES orchestrator.pool,
	ADD COLUMN pool_slots integer NOT NULL DEFAULT 1 CHECK (pool_slots > 0),
	ADD COLUMN priority_weight integer NOT NULL DEFAULT 1,
	ADD COLUMN weight_rule text NOT NULL DEFAULT 'downstream'
		CHECK (weight_rule IN ('downstream', 'upstream', 'absolute')),
	ADD COLUMN priority_weight_total bigint NOT NULL DEFAULT 1;
COMMENT ON COLUMN orchestrator.task.priority_weight_total IS
	'The effective weight, by weight_rule: downstream, its own plus all its downstream tasks''; upstream, its own plus all its upstream tasks''; absolute, its own';
CREATE INDEX task_pool_idx ON orchestrator.task (pool) WHERE pool IS NOT NULL;

-- a DAG's effective weights, computed once at the commit of the
-- transaction that added its tasks (add_task marks the DAG)
CREATE FUNCTION orchestrator.task_weights() RETURNS trigger
LANGUAGE C SET search_path = pg_catalog
AS 'MODULE_PATHNAME', 'orch_task_weights';
REVOKE ALL ON FUNCTION orchestrator.task_weights() FROM PUBLIC;
CREATE CONSTRAINT TRIGGER task_weights AFTER INSERT ON orchestrator.task
	DEFERRABLE INITIALLY DEFERRED
	FOR EACH ROW EXECUTE FUNCTION orchestrator.task_weights();

-- the tasks of 0.1 weigh 1 each, rule downstream: 1 + their downstream tasks
UPDATE orchestrator.task t SET priority_weight_total = 1 + (
	WITH RECURSIVE below(task_id) AS (
		SELECT x.task_id FROM orchestrator.task x
		 WHERE x.dag_id = t.dag_id AND t.task_id = ANY (x.upstream)
		UNION
		SELECT x.task_id FROM orchestrator.task x JOIN below b ON b.task_id = ANY (x.upstream)
		 WHERE x.dag_id = t.dag_id)
	SELECT count(*) FROM below);

-- the pool and slots an instance takes, set when it is queued (or waits)
ALTER TABLE orchestrator.task_instance
	ADD COLUMN pool text,
	ADD COLUMN pool_slots integer,
	ADD COLUMN claim_at timestamptz;
COMMENT ON COLUMN orchestrator.task_instance.claim_at IS
	'Claim order: when it became ready, minus its effective weight times orchestrator.priority_weight_age';
UPDATE orchestrator.task_instance SET claim_at = queued_at WHERE state = 'queued';

-- the claim: the first queued instance in claim order, without a sort
DROP INDEX orchestrator.task_instance_queue_idx;
CREATE INDEX task_instance_claim_idx ON orchestrator.task_instance (claim_at, run_id, task_id, map_index)
	WHERE state = 'queued';
-- a run's instances waiting for room, in claim order (claim_at is set with ready_at)
CREATE INDEX task_instance_ready_idx ON orchestrator.task_instance (run_id, claim_at)
	WHERE ready_at IS NOT NULL;
-- a pool's taken slots
CREATE INDEX task_instance_pool_idx ON orchestrator.task_instance (pool, pool_slots)
	WHERE pool IS NOT NULL AND state IN ('queued', 'running');
-- a pool's waiters, in claim order
CREATE INDEX task_instance_pool_wait_idx ON orchestrator.task_instance (pool, claim_at)
	WHERE pool IS NOT NULL AND ready_at IS NOT NULL;

CREATE FUNCTION orchestrator.create_pool(pool text, slots integer, description text DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_create_pool';
COMMENT ON FUNCTION orchestrator.create_pool(text, integer, text) IS
	'Creates a pool of slots shared by all DAGs (superusers only)';

CREATE FUNCTION orchestrator.drop_pool(pool text, if_exists boolean DEFAULT false)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_drop_pool';
COMMENT ON FUNCTION orchestrator.drop_pool(text, boolean) IS
	'Drops a pool no task uses (superusers only)';

CREATE FUNCTION orchestrator.grant_pool(pool text, role regrole)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_grant_pool';
COMMENT ON FUNCTION orchestrator.grant_pool(text, regrole) IS
	'Lets a role put the tasks of its DAGs in a pool (superusers only)';

CREATE FUNCTION orchestrator.revoke_pool(pool text, role regrole)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_revoke_pool';
COMMENT ON FUNCTION orchestrator.revoke_pool(text, regrole) IS
	'Takes back a role''s use of a pool, once none of its tasks is in it (superusers only)';

REVOKE ALL ON FUNCTION orchestrator.create_pool(text, integer, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION orchestrator.drop_pool(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION orchestrator.grant_pool(text, regrole) FROM PUBLIC;
REVOKE ALL ON FUNCTION orchestrator.revoke_pool(text, regrole) FROM PUBLIC;

-- Counts only, of all DAGs (the view reads as its owner, past row-level
-- security); a role sees the pools granted to it, a superuser all.
CREATE VIEW orchestrator.pools AS
SELECT p.pool,
	   p.slots,
	   (SELECT coalesce(sum(ti.pool_slots), 0) FROM orchestrator.task_instance ti
		 WHERE ti.pool = p.pool AND ti.state = 'running')::integer AS running,
	   (SELECT coalesce(sum(ti.pool_slots), 0) FROM orchestrator.task_instance ti
		 WHERE ti.pool = p.pool AND ti.state = 'queued')::integer AS queued,
	   (SELECT count(*) FROM orchestrator.task_instance ti
		 WHERE ti.pool = p.pool AND ti.ready_at IS NOT NULL
		   AND ti.state IN ('scheduled', 'up_for_retry', 'up_for_reschedule'))::integer AS waiting,
	   p.description
  FROM orchestrator.pool p
 WHERE (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER)
	OR EXISTS (SELECT 1 FROM orchestrator.pool_grant g
				WHERE g.pool = p.pool AND g.grantee = orchestrator.current_role_oid());
COMMENT ON VIEW orchestrator.pools IS
	'Pools granted to you (all, for a superuser): slots, slots taken by running and queued task instances of all DAGs, instances waiting for room';
GRANT SELECT ON orchestrator.pools TO PUBLIC;

------------------------------------------------------------------------
-- Waiting for data (issue 14).
--
-- Sensors: sql_sensor and http_sensor poke in short worker visits; between
-- pokes their instance is up_for_reschedule (Airflow's name), holds no
-- worker, and keeps its try number.  first_poke_at is when the try's first
-- poke started (its timeout counts from it); NULL outside a sensor's try.
-- next_try_at is the next poke's time.
--
-- Assets: a task's outlets (and a copy_into task's target table) record an
-- event when the task succeeds, in its transaction; asset_updated() records
-- one in the caller's.  Each event is queued, in the same transaction, for
-- every DAG whose on_assets names its asset (asset_queue, Airflow's
-- AssetDagRunQueue): the scheduler starts a run of a DAG once each asset it
-- names has a queued event, and links them to that run.  The tables are
-- internal (the API functions and the workers write them); the views
-- orchestrator.assets and orchestrator.asset_events show a role the events
-- of the assets it produces or consumes, and only its own DAGs and runs.
------------------------------------------------------------------------

ALTER TABLE orchestrator.task_instance DROP CONSTRAINT task_instance_state_check;
ALTER TABLE orchestrator.task_instance ADD CONSTRAINT task_instance_state_check
	CHECK (state IN ('scheduled', 'queued', 'running', 'success', 'failed',
					 'up_for_retry', 'upstream_failed', 'skipped', 'up_for_reschedule'));
ALTER TABLE orchestrator.task_instance ADD COLUMN first_poke_at timestamptz;
COMMENT ON COLUMN orchestrator.task_instance.first_poke_at IS
	'A sensor''s try: when its first poke started (its timeout counts from it); NULL otherwise';

ALTER TABLE orchestrator.dag_run DROP CONSTRAINT dag_run_run_type_check;
ALTER TABLE orchestrator.dag_run ADD CONSTRAINT dag_run_run_type_check
	CHECK (run_type IN ('scheduled', 'manual', 'backfill', 'asset_triggered'));

ALTER TABLE orchestrator.dag ADD COLUMN on_assets text[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN orchestrator.dag.on_assets IS
	'Assets whose events start a run (once each has had one since the last such run)';
CREATE INDEX dag_on_assets_idx ON orchestrator.dag USING gin (on_assets);

ALTER TABLE orchestrator.task ADD COLUMN outlets text[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN orchestrator.task.outlets IS
	'Assets the task produces (templated): an event each when it succeeds';

CREATE TABLE orchestrator.asset_event (
	id bigserial PRIMARY KEY,
	asset text NOT NULL,
	extra jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(extra) = 'object'),
	recorded_at timestamptz NOT NULL,
	-- who recorded it (a task's: its DAG's owner), in which cluster
	recorded_by oid,
	recorded_sysid bigint NOT NULL DEFAULT orchestrator.system_identifier(),
	-- a task's event: its run and task, and its mapped instance (NULL: not
	-- mapped) (never shown to other roles)
	source_run_id bigint,
	source_task_id text,
	source_map_index integer
);
COMMENT ON TABLE orchestrator.asset_event IS
	'Asset events; see the views orchestrator.asset_events and orchestrator.assets';
CREATE INDEX asset_event_asset_idx ON orchestrator.asset_event (asset, recorded_at);

CREATE TABLE orchestrator.asset_queue (
	dag_id text NOT NULL REFERENCES orchestrator.dag ON DELETE CASCADE,
	event_id bigint NOT NULL REFERENCES orchestrator.asset_event ON DELETE CASCADE,
	asset text NOT NULL,
	run_id bigint REFERENCES orchestrator.dag_run ON DELETE CASCADE,
	PRIMARY KEY (dag_id, event_id)
);
COMMENT ON TABLE orchestrator.asset_queue IS
	'Events waiting for (run_id NULL) or consumed by (run_id) an asset-triggered run of a DAG';
CREATE INDEX asset_queue_pending_idx ON orchestrator.asset_queue (dag_id) WHERE run_id IS NULL;
CREATE INDEX asset_queue_run_idx ON orchestrator.asset_queue (run_id);
CREATE INDEX asset_queue_event_idx ON orchestrator.asset_queue (event_id);

-- nobody reads or writes them but through the API and the views
ALTER TABLE orchestrator.asset_event ENABLE ROW LEVEL SECURITY;
ALTER TABLE orchestrator.asset_queue ENABLE ROW LEVEL SECURITY;

SELECT pg_catalog.pg_extension_config_dump('orchestrator.asset_event', '');
SELECT pg_catalog.pg_extension_config_dump('orchestrator.asset_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('orchestrator.asset_queue', '');

-- whether the current role may see everything (a superuser)
CREATE FUNCTION orchestrator.sees_all()
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
RETURN (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER);

-- The events a role may see: those it recorded, those of its DAGs' tasks,
-- and those of the assets its DAGs consume (their times and extra only:
-- the source run and task only to the source DAG's owner).  The view runs
-- as its owner (no row-level security on the tables for it) and filters
-- for the reader itself; security_barrier keeps the reader's own
-- conditions from seeing rows before the filter does.
CREATE VIEW orchestrator.asset_events WITH (security_barrier = true) AS
SELECT e.id,
	   e.asset,
	   e.recorded_at,
	   e.extra,
	   CASE WHEN s.mine THEN s.dag_id END AS source_dag_id,
	   CASE WHEN s.mine THEN e.source_run_id END AS source_run_id,
	   CASE WHEN s.mine THEN e.source_task_id END AS source_task_id,
	   ARRAY(SELECT q.run_id FROM orchestrator.asset_queue q
			  JOIN orchestrator.dag qd ON qd.dag_id = q.dag_id
			  WHERE q.event_id = e.id AND q.run_id IS NOT NULL
				AND (orchestrator.owned(qd.owner, qd.owner_sysid) OR orchestrator.sees_all())
			  ORDER BY q.run_id) AS triggered_runs,
	   CASE WHEN s.mine THEN e.source_map_index END AS source_map_index
  FROM orchestrator.asset_event e
  LEFT JOIN LATERAL (
	SELECT r.dag_id, orchestrator.owned(d.owner, d.owner_sysid) OR orchestrator.sees_all() AS mine
	  FROM orchestrator.dag_run r JOIN orchestrator.dag d ON d.dag_id = r.dag_id
	 WHERE r.run_id = e.source_run_id) s ON true
 WHERE orchestrator.sees_all()
	OR orchestrator.owned(e.recorded_by, e.recorded_sysid)
	OR s.mine
	OR EXISTS (SELECT 1 FROM orchestrator.dag d
				WHERE d.on_assets @> ARRAY[e.asset]
				  AND orchestrator.owned(d.owner, d.owner_sysid));
COMMENT ON VIEW orchestrator.asset_events IS
	'Events of the assets you produce or consume: time and extra; the source run and your runs they triggered, when yours';

CREATE VIEW orchestrator.assets WITH (security_barrier = true) AS
SELECT a.asset AS name,
	   (SELECT max(e.recorded_at) FROM orchestrator.asset_events e WHERE e.asset = a.asset) AS last_event_at,
	   (SELECT count(*) FROM orchestrator.asset_events e WHERE e.asset = a.asset) AS events,
	   ARRAY(SELECT d.dag_id FROM orchestrator.dag d
			  WHERE d.on_assets @> ARRAY[a.asset]
				AND (orchestrator.owned(d.owner, d.owner_sysid) OR orchestrator.sees_all())
			  ORDER BY d.dag_id) AS consumers
  FROM (SELECT e.asset FROM orchestrator.asset_events e
		UNION
		SELECT unnest(d.on_assets) FROM orchestrator.dag d
		 WHERE orchestrator.owned(d.owner, d.owner_sysid) OR orchestrator.sees_all()) a;
COMMENT ON VIEW orchestrator.assets IS
	'The assets you produce or consume: the last event, how many, and your DAGs that consume them';

GRANT SELECT ON orchestrator.asset_events, orchestrator.assets TO PUBLIC;

-- the DAG and task views show the new columns
CREATE OR REPLACE VIEW orchestrator.dags WITH (security_invoker = true) AS
SELECT d.dag_id,
	   pg_catalog.pg_get_userbyid(d.owner) AS owner,
	   d.schedule,
	   d.timezone,
	   d.start_date,
	   d.end_date,
	   d.catchup,
	   d.max_active_runs,
	   d.max_active_tasks,
	   d.params,
	   d.dagrun_timeout,
	   d.paused,
	   d.description,
	   (SELECT count(*) FROM orchestrator.task t WHERE t.dag_id = d.dag_id) AS task_count,
	   d.created_at,
	   d.updated_at,
	   d.on_failure_callback,
	   d.on_success_callback,
	   d.on_assets
  FROM orchestrator.dag d;

CREATE OR REPLACE VIEW orchestrator.tasks WITH (security_invoker = true) AS
SELECT t.dag_id,
	   t.task_id,
	   t.spec ->> 'operator' AS operator,
	   t.spec,
	   t.upstream,
	   ARRAY(SELECT dt.task_id FROM orchestrator.task dt
			  WHERE dt.dag_id = t.dag_id AND t.task_id = ANY (dt.upstream)
			  ORDER BY dt.position) AS downstream,
	   t.retries,
	   t.retry_delay,
	   t.retry_exponential_backoff,
	   t.max_retry_delay,
	   t.execution_timeout,
	   t.trigger_rule,
	   t.position,
	   t.on_failure_callback,
	   t.on_success_callback,
	   t.on_retry_callback,
	   t.cache_expiration,
	   t.outlets,
	   t.expand,
	   t.expand_query,
	   t.pool,
	   t.pool_slots,
	   t.priority_weight,
	   t.weight_rule,
	   t.priority_weight_total
  FROM orchestrator.task t;

-- Sensors: operators like the others (templates, retries, callbacks)
CREATE FUNCTION orchestrator.sql_sensor(query text,
										poke_interval interval DEFAULT '1 minute',
										timeout interval DEFAULT '1 day',
										soft_fail boolean DEFAULT false)
RETURNS jsonb
LANGUAGE sql STABLE
RETURN orchestrator.validate_operator(
	pg_catalog.jsonb_build_object('operator', 'sql_sensor', 'query', query,
								  'poke_interval', poke_interval::text,
								  'timeout', timeout::text, 'soft_fail', soft_fail));
COMMENT ON FUNCTION orchestrator.sql_sensor(text, interval, interval, boolean) IS
	'A sensor: succeeds once its query''s first column of its first row is true, polled every poke_interval';

CREATE FUNCTION orchestrator.http_sensor(url text,
										 poke_interval interval DEFAULT '1 minute',
										 timeout interval DEFAULT '1 day',
										 soft_fail boolean DEFAULT false,
										 method text DEFAULT 'HEAD',
										 headers jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE sql STABLE
RETURN orchestrator.validate_operator(
	pg_catalog.jsonb_build_object('operator', 'http_sensor', 'url', url,
								  'poke_interval', poke_interval::text,
								  'timeout', timeout::text, 'soft_fail', soft_fail,
								  'method', pg_catalog.upper(method), 'headers', headers));
COMMENT ON FUNCTION orchestrator.http_sensor(text, interval, interval, boolean, text, jsonb) IS
	'A sensor: succeeds once the URL answers with a 2xx status, polled every poke_interval';

-- An asset event, in the caller's transaction: it counts only if that commits
CREATE FUNCTION orchestrator.asset_updated(name text, extra jsonb DEFAULT '{}')
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_asset_updated';
COMMENT ON FUNCTION orchestrator.asset_updated(text, jsonb) IS
	'Records an event of an asset in this transaction (it counts if the transaction commits)';

-- create_dag(..., on_assets) and add_task(..., outlets, expand, expand_query, pool,
-- pool_slots, priority_weight, weight_rule)
DROP FUNCTION orchestrator.create_dag(text, text, timestamptz, timestamptz, boolean, integer, integer, text, jsonb, interval, boolean, text, jsonb, jsonb);
CREATE FUNCTION orchestrator.create_dag(dag_id text,
										schedule text DEFAULT NULL,
										start_date timestamptz DEFAULT NULL,
										end_date timestamptz DEFAULT NULL,
										catchup boolean DEFAULT false,
										max_active_runs integer DEFAULT 16,
										max_active_tasks integer DEFAULT 16,
										timezone text DEFAULT NULL,
										params jsonb DEFAULT '{}',
										dagrun_timeout interval DEFAULT NULL,
										paused boolean DEFAULT false,
										description text DEFAULT NULL,
										on_failure_callback jsonb DEFAULT NULL,
										on_success_callback jsonb DEFAULT NULL,
										on_assets text[] DEFAULT '{}')
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_create_dag';
COMMENT ON FUNCTION orchestrator.create_dag(text, text, timestamptz, timestamptz, boolean, integer, integer, text, jsonb, interval, boolean, text, jsonb, jsonb, text[]) IS
	'Creates a DAG, or replaces the definition (dropping the tasks) of one you own';

DROP FUNCTION orchestrator.add_task(text, text, jsonb, text[], integer, interval, boolean, interval, interval, text, jsonb, jsonb, jsonb, interval);
CREATE FUNCTION orchestrator.add_task(dag_id text,
									  task_id text,
									  operator jsonb,
									  upstream text[] DEFAULT '{}',
									  retries integer DEFAULT 0,
									  retry_delay interval DEFAULT '5 minutes',
									  retry_exponential_backoff boolean DEFAULT false,
									  max_retry_delay interval DEFAULT NULL,
									  execution_timeout interval DEFAULT NULL,
									  trigger_rule text DEFAULT 'all_success',
									  on_failure_callback jsonb DEFAULT NULL,
									  on_success_callback jsonb DEFAULT NULL,
									  on_retry_callback jsonb DEFAULT NULL,
									  cache_expiration interval DEFAULT NULL,
									  outlets text[] DEFAULT '{}',
									  expand jsonb DEFAULT NULL,
									  expand_query text DEFAULT NULL,
									  pool text DEFAULT NULL,
									  pool_slots integer DEFAULT 1,
									  priority_weight integer DEFAULT 1,
									  weight_rule text DEFAULT 'downstream')
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_add_task';
COMMENT ON FUNCTION orchestrator.add_task(text, text, jsonb, text[], integer, interval, boolean, interval, interval, text, jsonb, jsonb, jsonb, interval, text[], jsonb, text, text, integer, integer, text) IS
	'Adds a task to a DAG you own; its upstream tasks must already exist';
