-- Security: a DAG belongs to the role that created it; row-level security
-- shows each role its own DAGs, tasks and history; nothing beyond what an
-- author needs is granted to PUBLIC.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
CREATE ROLE regress_orch_alice NOLOGIN;
CREATE ROLE regress_orch_bob NOLOGIN;
CREATE ROLE regress_orch_eve NOLOGIN;
-- what a DBA grants to let a role author DAGs
GRANT USAGE ON SCHEMA orchestrator TO regress_orch_alice, regress_orch_bob;

-- what PUBLIC holds: reading the (row-filtered) tables and views, nothing else
SELECT table_name, privilege_type FROM information_schema.role_table_grants
 WHERE table_schema = 'orchestrator' AND grantee = 'PUBLIC' ORDER BY 1, 2;
SELECT has_schema_privilege('regress_orch_eve', 'orchestrator', 'USAGE') AS eve_usage,
	   has_schema_privilege('regress_orch_alice', 'orchestrator', 'USAGE') AS alice_usage;
SELECT has_sequence_privilege('regress_orch_alice', 'orchestrator.dag_run_run_id_seq', 'USAGE');

-- a role without USAGE cannot reach anything
SET ROLE regress_orch_eve;
SELECT orchestrator.create_dag('eve_dag');
SELECT * FROM orchestrator.dags;
RESET ROLE;

-- alice defines a DAG
SET ROLE regress_orch_alice;
SELECT orchestrator.create_dag('alice_dag', '@daily', start_date => '2021-01-01');
SELECT orchestrator.add_task('alice_dag', 'a', orchestrator.sql('SELECT 1'));
SELECT orchestrator.add_task('alice_dag', 'b', orchestrator.sql('SELECT 2'), upstream => '{a}');
SELECT dag_id, owner, task_count FROM orchestrator.dags;
SELECT dag_id, task_id, upstream FROM orchestrator.tasks ORDER BY position;
-- she reads the tables, under row-level security, but cannot write them
SELECT dag_id, owner = 'regress_orch_alice'::regrole AS owned FROM orchestrator.dag;
INSERT INTO orchestrator.dag (dag_id, owner, timezone) VALUES ('x', 'regress_orch_alice'::regrole, 'UTC');
UPDATE orchestrator.dag SET paused = true;
DELETE FROM orchestrator.task;
SELECT orchestrator.pause_dag('alice_dag');
SELECT orchestrator.unpause_dag('alice_dag');
RESET ROLE;

-- history for alice's DAG (written here as the superuser the scheduler is)
INSERT INTO orchestrator.dag_run (dag_id, run_type, logical_date, state)
	VALUES ('alice_dag', 'manual', '2021-01-01', 'failed');
INSERT INTO orchestrator.task_instance (run_id, task_id, state, try_number, max_tries, error)
	SELECT run_id, 'a', 'failed', 1, 1, 'secret error text' FROM orchestrator.dag_run;

-- bob sees none of it and cannot change it
SET ROLE regress_orch_bob;
SELECT count(*) FROM orchestrator.dags;
SELECT count(*) FROM orchestrator.tasks;
SELECT count(*) FROM orchestrator.dag_runs;
SELECT count(*) FROM orchestrator.task_instances;
SELECT count(*) FROM orchestrator.dag;
SELECT count(*) FROM orchestrator.task_instance;
SELECT orchestrator.create_dag('alice_dag', '@hourly');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('alice_dag', 'evil', orchestrator.sql('DROP TABLE important'));
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.pause_dag('alice_dag');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.unpause_dag('alice_dag');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.drop_dag('alice_dag');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.drop_dag('alice_dag', if_exists => true);
-- his own DAGs work as alice's do
SELECT orchestrator.create_dag('bob_dag', '*/5 * * * *');
SELECT orchestrator.add_task('bob_dag', 'fetch', orchestrator.http_fetch('https://example.com/{{ ds }}.csv'));
SELECT orchestrator.add_task('bob_dag', 'load', orchestrator.copy_into('bob_{{ ds_nodash }}', input => 'fetch'));
SELECT dag_id, owner, task_count FROM orchestrator.dags;
RESET ROLE;

-- another role's DAG or run reads exactly like one that does not exist:
-- the same SQLSTATE, message, detail and hint, and no lock taken on it.
-- (create_dag cannot hide that a dag_id is taken, since DAG ids are shared,
-- but it names no owner: see above.)
INSERT INTO orchestrator.dag_run (run_id, dag_id, run_type, logical_date, state)
	VALUES (770001, 'alice_dag', 'manual', '2021-01-02', 'running');
INSERT INTO orchestrator.task_instance (run_id, task_id, state, try_number, max_tries)
	VALUES (770001, 'a', 'success', 1, 1), (770001, 'b', 'scheduled', 0, 1);
SET ROLE regress_orch_alice;
SELECT orchestrator.create_dag('alice_empty', '@daily', catchup => true);
RESET ROLE;
-- a row's xmax changes when anyone locks it
SELECT string_agg(xmax::text, ' ' ORDER BY dag_id) AS dags_xmax FROM orchestrator.dag
 WHERE dag_id LIKE 'alice%' \gset
SELECT xmax AS run_xmax FROM orchestrator.dag_run WHERE run_id = 770001 \gset
-- an error as SQLSTATE, message, detail and hint, with the id it was given
-- (a DAG's or a run's) replaced by <id>
CREATE FUNCTION public.regress_orch_error(call text, id text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	state text;
	msg text;
	detail text;
	hint text;
BEGIN
	EXECUTE format(call, id);
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
	RETURN replace(state || ': ' || msg || coalesce(' DETAIL: ' || nullif(detail, ''), '')
				   || coalesce(' HINT: ' || nullif(hint, ''), ''), id, '<id>');
END $$;
SET ROLE regress_orch_bob;
WITH e AS MATERIALIZED (
	SELECT call, id, regress_orch_error(call, id) AS theirs,
		   regress_orch_error(call, 'no_such_dag') AS missing
	  FROM (VALUES ('SELECT orchestrator.add_task(%L, ''t'', orchestrator.sql(''SELECT 1''))'),
				   ('SELECT orchestrator.pause_dag(%L)'),
				   ('SELECT orchestrator.unpause_dag(%L)'),
				   ('SELECT orchestrator.drop_dag(%L)'),
				   ('SELECT orchestrator.trigger_dag(%L)'),
				   ('SELECT orchestrator.backfill(%L, ''2021-01-01'', ''2021-01-03'')'),
				   ('SELECT orchestrator.dag_graph(%L)'),
				   ('SELECT orchestrator.grid(%L)')) AS c(call),
		   (VALUES ('alice_dag'), ('alice_empty')) AS d(id))
SELECT call, id, theirs AS bob_gets, theirs = missing AS same_as_missing
  FROM e ORDER BY id, call;
WITH e AS MATERIALIZED (
	SELECT call, regress_orch_error(call, '770001') AS theirs,
		   regress_orch_error(call, '770002') AS missing
	  FROM (VALUES ('SELECT orchestrator.clear_task(%s, ''a'')'),
				   ('SELECT orchestrator.clear_task(%s, ''nope'')'),
				   ('SELECT orchestrator.cancel_run(%s)'),
				   ('SELECT orchestrator.wait_run(%s, ''0.1 seconds'')'),
				   ('SELECT orchestrator.dag_graph(''alice_dag'', run_id => %s)')) AS c(call))
SELECT call, theirs AS bob_gets, theirs = missing AS same_as_missing
  FROM e ORDER BY call;
-- drop_dag(if_exists) says the same for both
SELECT orchestrator.drop_dag('alice_dag', if_exists => true);
SELECT orchestrator.drop_dag('no_such_dag', if_exists => true);
RESET ROLE;
-- none of it changed alice's DAGs or her runs, or even locked them
SELECT string_agg(xmax::text, ' ' ORDER BY dag_id) = :'dags_xmax' AS dags_not_locked
  FROM orchestrator.dag WHERE dag_id LIKE 'alice%';
SELECT xmax = :'run_xmax' AS run_not_locked FROM orchestrator.dag_run WHERE run_id = 770001;
SELECT dag_id, paused, (SELECT count(*) FROM orchestrator.task t WHERE t.dag_id = d.dag_id) AS tasks,
	   (SELECT count(*) FROM orchestrator.dag_run r WHERE r.dag_id = d.dag_id) AS runs
  FROM orchestrator.dag d WHERE dag_id LIKE 'alice%' ORDER BY dag_id;
SELECT logical_date, state FROM orchestrator.dag_run ORDER BY logical_date;
SELECT task_id, state FROM orchestrator.task_instance WHERE run_id = 770001 ORDER BY task_id;
-- a superuser acts on any run
SELECT orchestrator.wait_run(770001, '0.1 seconds');
SELECT orchestrator.cancel_run(770001);
SELECT orchestrator.clear_task(770001, 'a');
SELECT orchestrator.wait_run(770001, '0.1 seconds');
SELECT task_id, state FROM orchestrator.task_instance WHERE run_id = 770001 ORDER BY task_id;
DELETE FROM orchestrator.dag_run WHERE run_id = 770001;
SELECT orchestrator.drop_dag('alice_empty');
DROP FUNCTION public.regress_orch_error(text, text);

-- alice's DAG is untouched
SELECT dag_id, owner, schedule, paused, task_count FROM orchestrator.dags WHERE dag_id = 'alice_dag';

-- even a role granted writes on the table cannot forge or take over a DAG
GRANT INSERT, UPDATE, DELETE ON orchestrator.dag TO regress_orch_bob;
SET ROLE regress_orch_bob;
INSERT INTO orchestrator.dag (dag_id, owner, timezone)
	VALUES ('forged', 'regress_orch_alice'::regrole, 'UTC');
UPDATE orchestrator.dag SET owner = 'regress_orch_alice'::regrole WHERE dag_id = 'bob_dag';
UPDATE orchestrator.dag SET paused = true WHERE dag_id = 'alice_dag';
DELETE FROM orchestrator.dag WHERE dag_id = 'alice_dag';
RESET ROLE;
REVOKE INSERT, UPDATE, DELETE ON orchestrator.dag FROM regress_orch_bob;
SELECT dag_id, owner, paused FROM orchestrator.dags ORDER BY dag_id;

-- the API writes the catalog with its owner's rights, so it ignores the
-- caller's search_path: an operator bob plants is never called by it
CREATE SCHEMA regress_orch_evil AUTHORIZATION regress_orch_bob;
SET ROLE regress_orch_bob;
CREATE FUNCTION regress_orch_evil.texteq(text, text) RETURNS boolean
	LANGUAGE plpgsql AS $$
BEGIN
	RAISE NOTICE 'planted operator called as %', current_user;
	RETURN $1 OPERATOR(pg_catalog.=) $2;
END $$;
CREATE OPERATOR regress_orch_evil.= (LEFTARG = text, RIGHTARG = text,
									 FUNCTION = regress_orch_evil.texteq);
SET search_path = regress_orch_evil, pg_catalog;
SELECT 'the planted operator works' = 'the planted operator works' AS planted;
SELECT orchestrator.create_dag('bob_dag2');
SELECT orchestrator.add_task('bob_dag2', 't', orchestrator.sql('SELECT 1'));
SELECT orchestrator.pause_dag('bob_dag2');
SELECT orchestrator.drop_dag('bob_dag2');
RESET search_path;
RESET ROLE;
DROP SCHEMA regress_orch_evil CASCADE;

-- a superuser sees and manages every DAG; replacing one keeps its owner
SELECT dag_id, owner FROM orchestrator.dags ORDER BY dag_id;
SELECT orchestrator.create_dag('alice_dag', '@hourly');
SELECT dag_id, owner, schedule FROM orchestrator.dags WHERE dag_id = 'alice_dag';
SELECT orchestrator.pause_dag('bob_dag');
SELECT orchestrator.drop_dag(dag_id) FROM orchestrator.dags;
SELECT count(*) FROM orchestrator.dag_run;

REVOKE USAGE ON SCHEMA orchestrator FROM regress_orch_alice, regress_orch_bob;
DROP ROLE regress_orch_alice, regress_orch_bob, regress_orch_eve;
