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
	WHERE state IN ('scheduled', 'queued', 'running', 'up_for_retry');
CREATE INDEX task_instance_ready_idx ON orchestrator.task_instance (run_id, ready_at)
	WHERE ready_at IS NOT NULL;
-- a finished task's downstream tasks
CREATE INDEX task_upstream_idx ON orchestrator.task USING gin (upstream);
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

DROP INDEX orchestrator.task_instance_queue_idx;
CREATE INDEX task_instance_queue_idx ON orchestrator.task_instance (queued_at, run_id, task_id, map_index)
	WHERE state = 'queued';

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
	   t.expand,
	   t.expand_query
  FROM orchestrator.task t;

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
									  expand jsonb DEFAULT NULL,
									  expand_query text DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_add_task';
COMMENT ON FUNCTION orchestrator.add_task(text, text, jsonb, text[], integer, interval, boolean, interval, interval, text, jsonb, jsonb, jsonb, interval, jsonb, text) IS
	'Adds a task to a DAG you own; its upstream tasks must already exist';

DROP FUNCTION orchestrator.clear_task(bigint, text, boolean);
CREATE FUNCTION orchestrator.clear_task(run_id bigint, task_id text, downstream boolean DEFAULT true,
										map_index integer DEFAULT NULL)
RETURNS integer
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_clear_task';
COMMENT ON FUNCTION orchestrator.clear_task(bigint, text, boolean, integer) IS
	'Runs a task (one mapped instance of it, or all) and its downstream tasks of a run again, reopening the run; returns how many task instances were cleared';
