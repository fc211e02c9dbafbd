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
\echo :LAST_ERROR_SQLSTATE
-- his own DAGs work as alice's do
SELECT orchestrator.create_dag('bob_dag', '*/5 * * * *');
SELECT orchestrator.add_task('bob_dag', 'fetch', orchestrator.http_fetch('https://example.com/{{ ds }}.csv'));
SELECT orchestrator.add_task('bob_dag', 'load', orchestrator.copy_into('bob_{{ ds_nodash }}', input => 'fetch'));
SELECT dag_id, owner, task_count FROM orchestrator.dags;
RESET ROLE;

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
