/* orchestrator--0.1.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION orchestrator" to load this file. \quit

-- The schema comes from the control file.  PUBLIC gets no USAGE on it: a
-- DBA lets a role author DAGs with GRANT USAGE ON SCHEMA orchestrator.

------------------------------------------------------------------------
-- Catalog
------------------------------------------------------------------------

CREATE TABLE orchestrator.dag (
	dag_id text PRIMARY KEY,
	owner oid NOT NULL,
	schedule text,
	start_date timestamptz,
	end_date timestamptz,
	catchup boolean NOT NULL DEFAULT false,
	max_active_runs integer NOT NULL DEFAULT 16 CHECK (max_active_runs > 0),
	max_active_tasks integer NOT NULL DEFAULT 16 CHECK (max_active_tasks > 0),
	timezone text NOT NULL,
	params jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
	dagrun_timeout interval,
	paused boolean NOT NULL DEFAULT false,
	description text,
	on_failure_callback jsonb,
	on_success_callback jsonb,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now(),
	CHECK (end_date >= start_date)
);
COMMENT ON TABLE orchestrator.dag IS 'DAG definitions; see the view orchestrator.dags';
COMMENT ON COLUMN orchestrator.dag.owner IS 'OID of the role that owns the DAG; its tasks run as this role';

CREATE TABLE orchestrator.task (
	dag_id text NOT NULL REFERENCES orchestrator.dag ON DELETE CASCADE,
	task_id text NOT NULL,
	spec jsonb NOT NULL,
	upstream text[] NOT NULL DEFAULT '{}',
	retries integer NOT NULL DEFAULT 0 CHECK (retries >= 0),
	retry_delay interval NOT NULL DEFAULT '5 minutes',
	retry_exponential_backoff boolean NOT NULL DEFAULT false,
	max_retry_delay interval,
	execution_timeout interval,
	trigger_rule text NOT NULL DEFAULT 'all_success',
	on_failure_callback jsonb,
	on_success_callback jsonb,
	on_retry_callback jsonb,
	cache_expiration interval,
	position integer NOT NULL,
	PRIMARY KEY (dag_id, task_id)
);
COMMENT ON TABLE orchestrator.task IS 'Task definitions; see the view orchestrator.tasks';

CREATE TABLE orchestrator.dag_run (
	run_id bigserial PRIMARY KEY,
	dag_id text NOT NULL REFERENCES orchestrator.dag ON DELETE CASCADE,
	run_type text NOT NULL CHECK (run_type IN ('scheduled', 'manual', 'backfill')),
	logical_date timestamptz NOT NULL,
	data_interval_start timestamptz,
	data_interval_end timestamptz,
	state text NOT NULL DEFAULT 'queued'
		CHECK (state IN ('queued', 'running', 'success', 'failed')),
	conf jsonb NOT NULL DEFAULT '{}',
	queued_at timestamptz NOT NULL DEFAULT now(),
	started_at timestamptz,
	finished_at timestamptz,
	UNIQUE (dag_id, logical_date)
);
CREATE INDEX dag_run_state_idx ON orchestrator.dag_run (state)
	WHERE state IN ('queued', 'running');

CREATE TABLE orchestrator.task_instance (
	run_id bigint NOT NULL REFERENCES orchestrator.dag_run ON DELETE CASCADE,
	task_id text NOT NULL,
	state text NOT NULL DEFAULT 'scheduled'
		CHECK (state IN ('scheduled', 'queued', 'running', 'success', 'failed',
						 'up_for_retry', 'upstream_failed', 'skipped')),
	try_number integer NOT NULL DEFAULT 0,
	max_tries integer NOT NULL,
	queued_at timestamptz,
	started_at timestamptz,
	finished_at timestamptz,
	next_try_at timestamptz,
	error text,
	worker_pid integer,
	rows_loaded bigint,
	cached boolean NOT NULL DEFAULT false,
	PRIMARY KEY (run_id, task_id)
);
CREATE INDEX task_instance_active_idx ON orchestrator.task_instance (state)
	WHERE state IN ('queued', 'running');

-- A task's output (http_fetch, gunzip): a large object, owned by the DAG's
-- owner, written in the task's transaction.  Deleting the row (with its
-- run) unlinks the large object.
CREATE TABLE orchestrator.artifact (
	run_id bigint NOT NULL,
	task_id text NOT NULL,
	loid oid NOT NULL,
	size bigint NOT NULL,
	sha256 text NOT NULL,
	content_type text,
	http_status integer,
	url text,
	cache_key text,				-- what the output was made from
	etag text,					-- the response's validators, to revalidate
	last_modified text,
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (run_id, task_id),
	FOREIGN KEY (run_id, task_id) REFERENCES orchestrator.task_instance ON DELETE CASCADE
);

-- Callbacks due: enqueued in the transaction that decides the outcome they
-- follow, run by the task workers.  Internal: not granted to anyone.
CREATE TABLE orchestrator.callback (
	id bigserial PRIMARY KEY,
	run_id bigint NOT NULL REFERENCES orchestrator.dag_run ON DELETE CASCADE,
	task_id text,				-- NULL for the run's own callbacks
	kind text NOT NULL
		CHECK (kind IN ('on_failure_callback', 'on_success_callback', 'on_retry_callback')),
	spec jsonb NOT NULL,
	try_number integer,
	error text,
	created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE orchestrator.callback ENABLE ROW LEVEL SECURITY;

-- What each try said (task_log view): its SQL's NOTICE, INFO and WARNING
-- messages and the operator's own lines, at most 1,000 lines a try.
CREATE TABLE orchestrator.log (
	id bigserial PRIMARY KEY,
	run_id bigint NOT NULL,
	task_id text NOT NULL,
	try_number integer NOT NULL,
	logged_at timestamptz NOT NULL,
	level text NOT NULL,
	message text NOT NULL,
	FOREIGN KEY (run_id, task_id) REFERENCES orchestrator.task_instance ON DELETE CASCADE
);
CREATE INDEX log_run_task_idx ON orchestrator.log (run_id, task_id, try_number);

CREATE INDEX artifact_cache_key_idx ON orchestrator.artifact (task_id, cache_key)
	WHERE cache_key IS NOT NULL;

CREATE FUNCTION orchestrator.artifact_unlink()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'orch_artifact_unlink';

CREATE TRIGGER artifact_unlink AFTER DELETE ON orchestrator.artifact
	FOR EACH ROW EXECUTE FUNCTION orchestrator.artifact_unlink();

-- Events: NOTIFY orchestrator_events at each state change, at commit
CREATE FUNCTION orchestrator.notify_event()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'orch_notify_event';

CREATE TRIGGER dag_run_event AFTER INSERT OR UPDATE OF state ON orchestrator.dag_run
	FOR EACH ROW EXECUTE FUNCTION orchestrator.notify_event();
CREATE TRIGGER task_instance_event AFTER INSERT OR UPDATE OF state ON orchestrator.task_instance
	FOR EACH ROW EXECUTE FUNCTION orchestrator.notify_event();

-- pg_dump keeps the definitions and history
SELECT pg_catalog.pg_extension_config_dump('orchestrator.dag', '');
SELECT pg_catalog.pg_extension_config_dump('orchestrator.task', '');
SELECT pg_catalog.pg_extension_config_dump('orchestrator.dag_run', '');
SELECT pg_catalog.pg_extension_config_dump('orchestrator.dag_run_run_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('orchestrator.task_instance', '');
SELECT pg_catalog.pg_extension_config_dump('orchestrator.artifact', '');
SELECT pg_catalog.pg_extension_config_dump('orchestrator.log', '');
SELECT pg_catalog.pg_extension_config_dump('orchestrator.log_id_seq', '');

------------------------------------------------------------------------
-- Row-level security: a role sees its own DAGs and their tasks and
-- history; a superuser sees all.  Nobody but the table owner writes the
-- tables directly (the API functions write them after their own checks);
-- should a DBA grant writes anyway, WITH CHECK still keeps a role from
-- creating or moving a DAG into another role's hands.
------------------------------------------------------------------------

-- the role the policies compare owners with
CREATE FUNCTION orchestrator.current_role_oid()
RETURNS oid
LANGUAGE sql STABLE PARALLEL SAFE
RETURN (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER);

ALTER TABLE orchestrator.dag ENABLE ROW LEVEL SECURITY;
ALTER TABLE orchestrator.task ENABLE ROW LEVEL SECURITY;
ALTER TABLE orchestrator.dag_run ENABLE ROW LEVEL SECURITY;
ALTER TABLE orchestrator.task_instance ENABLE ROW LEVEL SECURITY;
ALTER TABLE orchestrator.artifact ENABLE ROW LEVEL SECURITY;
ALTER TABLE orchestrator.log ENABLE ROW LEVEL SECURITY;

CREATE POLICY dag_owner ON orchestrator.dag
	USING (owner = orchestrator.current_role_oid())
	WITH CHECK (owner = orchestrator.current_role_oid());

CREATE POLICY task_owner ON orchestrator.task
	USING (EXISTS (SELECT 1 FROM orchestrator.dag d
				   WHERE d.dag_id = task.dag_id
					 AND d.owner = orchestrator.current_role_oid()));

CREATE POLICY dag_run_owner ON orchestrator.dag_run
	USING (EXISTS (SELECT 1 FROM orchestrator.dag d
				   WHERE d.dag_id = dag_run.dag_id
					 AND d.owner = orchestrator.current_role_oid()));

CREATE POLICY task_instance_owner ON orchestrator.task_instance
	USING (EXISTS (SELECT 1 FROM orchestrator.dag_run dr
				   JOIN orchestrator.dag d ON d.dag_id = dr.dag_id
				   WHERE dr.run_id = task_instance.run_id
					 AND d.owner = orchestrator.current_role_oid()));

CREATE POLICY artifact_owner ON orchestrator.artifact
	USING (EXISTS (SELECT 1 FROM orchestrator.dag_run dr
				   JOIN orchestrator.dag d ON d.dag_id = dr.dag_id
				   WHERE dr.run_id = artifact.run_id
					 AND d.owner = orchestrator.current_role_oid()));

CREATE POLICY log_owner ON orchestrator.log
	USING (EXISTS (SELECT 1 FROM orchestrator.dag_run dr
				   JOIN orchestrator.dag d ON d.dag_id = dr.dag_id
				   WHERE dr.run_id = log.run_id
					 AND d.owner = orchestrator.current_role_oid()));

------------------------------------------------------------------------
-- Views (security_invoker: row-level security applies to the reader)
------------------------------------------------------------------------

CREATE VIEW orchestrator.dags WITH (security_invoker = true) AS
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
	   d.on_success_callback
  FROM orchestrator.dag d;

CREATE VIEW orchestrator.tasks WITH (security_invoker = true) AS
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
	   t.cache_expiration
  FROM orchestrator.task t;

CREATE VIEW orchestrator.dag_runs WITH (security_invoker = true) AS
SELECT r.run_id,
	   r.dag_id,
	   r.run_type,
	   r.logical_date,
	   r.data_interval_start,
	   r.data_interval_end,
	   r.state,
	   r.conf,
	   r.queued_at,
	   r.started_at,
	   r.finished_at
  FROM orchestrator.dag_run r;

CREATE VIEW orchestrator.task_instances WITH (security_invoker = true) AS
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
	   ti.cached
  FROM orchestrator.task_instance ti
  JOIN orchestrator.dag_run r USING (run_id);

CREATE VIEW orchestrator.artifacts WITH (security_invoker = true) AS
SELECT a.run_id,
	   r.dag_id,
	   a.task_id,
	   a.size,
	   a.sha256,
	   a.content_type,
	   a.http_status,
	   a.url,
	   a.created_at,
	   a.loid
  FROM orchestrator.artifact a
  JOIN orchestrator.dag_run r USING (run_id);

CREATE VIEW orchestrator.task_log WITH (security_invoker = true) AS
SELECT l.run_id,
	   r.dag_id,
	   l.task_id,
	   l.try_number,
	   l.logged_at,
	   l.level,
	   l.message,
	   l.id
  FROM orchestrator.log l
  JOIN orchestrator.dag_run r USING (run_id);

-- the tasks running now, from shared memory
CREATE FUNCTION orchestrator.worker_progress(OUT pid integer, OUT run_id bigint,
											 OUT task_id text, OUT started_at timestamptz,
											 OUT bytes_read bigint, OUT rows_loaded bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'orch_worker_progress';

CREATE VIEW orchestrator.progress WITH (security_invoker = true) AS
SELECT p.run_id,
	   ti.dag_id,
	   p.task_id,
	   p.pid AS worker_pid,
	   p.started_at,
	   p.bytes_read,
	   p.rows_loaded,
	   round((p.bytes_read / nullif(extract(epoch FROM clock_timestamp() - p.started_at), 0))::numeric)
		   AS bytes_per_second,
	   round((p.rows_loaded / nullif(extract(epoch FROM clock_timestamp() - p.started_at), 0))::numeric)
		   AS rows_per_second
  FROM orchestrator.worker_progress() p
  JOIN orchestrator.task_instances ti ON ti.run_id = p.run_id AND ti.task_id = p.task_id;

GRANT SELECT ON orchestrator.dag, orchestrator.task, orchestrator.dag_run,
	orchestrator.task_instance, orchestrator.artifact, orchestrator.log TO PUBLIC;
GRANT SELECT ON orchestrator.dags, orchestrator.tasks, orchestrator.dag_runs,
	orchestrator.task_instances, orchestrator.artifacts, orchestrator.progress,
	orchestrator.task_log TO PUBLIC;

------------------------------------------------------------------------
-- Schedules and templates
------------------------------------------------------------------------

CREATE FUNCTION orchestrator.cron_next(schedule text, after timestamptz,
									   timezone text DEFAULT 'UTC', n integer DEFAULT 1)
RETURNS SETOF timestamptz
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'orch_cron_next';
COMMENT ON FUNCTION orchestrator.cron_next(text, timestamptz, text, integer) IS
	'The next n times strictly after "after" at which a cron schedule fires in a time zone';

CREATE FUNCTION orchestrator.render(template text, logical_date timestamptz,
									params jsonb DEFAULT '{}',
									data_interval_end timestamptz DEFAULT NULL,
									dag_id text DEFAULT NULL,
									task_id text DEFAULT NULL,
									run_id text DEFAULT NULL)
RETURNS text
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'orch_render';
COMMENT ON FUNCTION orchestrator.render(text, timestamptz, jsonb, timestamptz, text, text, text) IS
	'Renders a task argument template as a run with this logical date would';

CREATE FUNCTION orchestrator.render_table(target text, logical_date timestamptz,
										  params jsonb DEFAULT '{}',
										  data_interval_end timestamptz DEFAULT NULL,
										  dag_id text DEFAULT NULL,
										  task_id text DEFAULT NULL,
										  run_id text DEFAULT NULL)
RETURNS text
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'orch_render_table';
COMMENT ON FUNCTION orchestrator.render_table(text, timestamptz, jsonb, timestamptz, text, text, text) IS
	'The quoted table name that a templated copy_into target names for a run';

------------------------------------------------------------------------
-- Operators: each returns a task's spec, validated
------------------------------------------------------------------------

CREATE FUNCTION orchestrator.validate_operator(spec jsonb)
RETURNS jsonb
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'orch_validate_operator';

CREATE FUNCTION orchestrator.sql(query text)
RETURNS jsonb
LANGUAGE sql STABLE
RETURN orchestrator.validate_operator(
	pg_catalog.jsonb_build_object('operator', 'sql', 'query', query));

CREATE FUNCTION orchestrator.http_fetch(url text,
										method text DEFAULT 'GET',
										headers jsonb DEFAULT '{}',
										body text DEFAULT NULL,
										timeout interval DEFAULT '10 minutes',
										max_bytes bigint DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql STABLE
RETURN orchestrator.validate_operator(
	pg_catalog.jsonb_build_object('operator', 'http_fetch', 'url', url,
								  'method', pg_catalog.upper(method),
								  'headers', headers, 'body', body,
								  'timeout', timeout::text,
								  'max_bytes', max_bytes));

CREATE FUNCTION orchestrator.gunzip(input text)
RETURNS jsonb
LANGUAGE sql STABLE
RETURN orchestrator.validate_operator(
	pg_catalog.jsonb_build_object('operator', 'gunzip', 'input', input));

CREATE FUNCTION orchestrator.copy_into(target text,
									   input text DEFAULT NULL,
									   url text DEFAULT NULL,
									   format text DEFAULT 'csv',
									   header boolean DEFAULT true,
									   delimiter text DEFAULT NULL,
									   null_string text DEFAULT NULL,
									   compression text DEFAULT 'auto',
									   mode text DEFAULT 'append',
									   "create" boolean DEFAULT false,
									   columns text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql STABLE
RETURN orchestrator.validate_operator(
	pg_catalog.jsonb_build_object('operator', 'copy_into', 'target', target,
								  'input', input, 'url', url,
								  'format', format, 'header', header,
								  'delimiter', delimiter,
								  'null_string', null_string,
								  'compression', compression, 'mode', mode,
								  'create', "create", 'columns', columns));

------------------------------------------------------------------------
-- Definitions.  These write the catalog as its owner after checking that
-- the caller owns the DAG; search_path is pinned for that reason.
------------------------------------------------------------------------

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
										on_success_callback jsonb DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_create_dag';
COMMENT ON FUNCTION orchestrator.create_dag(text, text, timestamptz, timestamptz, boolean, integer, integer, text, jsonb, interval, boolean, text, jsonb, jsonb) IS
	'Creates a DAG, or replaces the definition (dropping the tasks) of one you own';

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
									  cache_expiration interval DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_add_task';
COMMENT ON FUNCTION orchestrator.add_task(text, text, jsonb, text[], integer, interval, boolean, interval, interval, text, jsonb, jsonb, jsonb, interval) IS
	'Adds a task to a DAG you own; its upstream tasks must already exist';

CREATE FUNCTION orchestrator.drop_dag(dag_id text, if_exists boolean DEFAULT false)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_drop_dag';
COMMENT ON FUNCTION orchestrator.drop_dag(text, boolean) IS
	'Drops a DAG you own, with its tasks and run history';

CREATE FUNCTION orchestrator.pause_dag(dag_id text)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_pause_dag';

CREATE FUNCTION orchestrator.unpause_dag(dag_id text)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_unpause_dag';

------------------------------------------------------------------------
-- Runs.  These also check ownership and write as the catalog's owner.
------------------------------------------------------------------------

CREATE FUNCTION orchestrator.trigger_dag(dag_id text, conf jsonb DEFAULT '{}',
										 logical_date timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_trigger_dag';
COMMENT ON FUNCTION orchestrator.trigger_dag(text, jsonb, timestamptz) IS
	'Creates a manual run of a DAG you own; returns its run_id';

CREATE FUNCTION orchestrator.backfill(dag_id text, from_date timestamptz, to_date timestamptz)
RETURNS integer
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_backfill';
COMMENT ON FUNCTION orchestrator.backfill(text, timestamptz, timestamptz) IS
	'Creates the runs of the scheduled intervals whose logical dates are in [from_date, to_date]; returns how many';

CREATE FUNCTION orchestrator.clear_task(run_id bigint, task_id text, downstream boolean DEFAULT true)
RETURNS integer
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_clear_task';
COMMENT ON FUNCTION orchestrator.clear_task(bigint, text, boolean) IS
	'Runs a task (and its downstream tasks) of a run again, reopening the run; returns how many task instances were cleared';

CREATE FUNCTION orchestrator.cancel_run(run_id bigint)
RETURNS void
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_cancel_run';
COMMENT ON FUNCTION orchestrator.cancel_run(bigint) IS
	'Stops a run: its running tasks fail and roll back, the others are skipped';

CREATE FUNCTION orchestrator.wait_run(run_id bigint, timeout interval DEFAULT '1 minute')
RETURNS text
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_wait_run';
COMMENT ON FUNCTION orchestrator.wait_run(bigint, interval) IS
	'Waits until a run ends (or the timeout passes) and returns its state';

CREATE FUNCTION orchestrator.purge_history(older_than interval)
RETURNS bigint
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'orch_purge_history';
COMMENT ON FUNCTION orchestrator.purge_history(interval) IS
	'Removes your runs that ended before now() - older_than, with their task instances and artifacts; returns how many runs';

------------------------------------------------------------------------
-- Pictures (read as the caller: each role sees its own DAGs)
------------------------------------------------------------------------

CREATE FUNCTION orchestrator.dag_graph(dag_id text, format text DEFAULT 'mermaid',
									   run_id bigint DEFAULT NULL)
RETURNS text
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'orch_dag_graph';
COMMENT ON FUNCTION orchestrator.dag_graph(text, text, bigint) IS
	'A DAG as Mermaid (graph LR) or Graphviz DOT, coloured by state when a run is given';

CREATE FUNCTION orchestrator.grid(dag_id text, runs integer DEFAULT 10)
RETURNS SETOF text
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'orch_grid';
COMMENT ON FUNCTION orchestrator.grid(text, integer) IS
	'Airflow''s grid view for a terminal: a line per task, a column per run (newest right)';

------------------------------------------------------------------------
-- Setup check
------------------------------------------------------------------------

CREATE FUNCTION orchestrator.check_setup()
RETURNS boolean
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'orch_check_setup';
COMMENT ON FUNCTION orchestrator.check_setup() IS
	'Warns if DAGs in this database cannot run; true if they can';

SELECT orchestrator.check_setup();
