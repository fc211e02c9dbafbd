-- Every bad definition gets a clear error with a fitting SQLSTATE, and
-- leaves nothing behind.
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SELECT orchestrator.create_dag('d', '@daily', start_date => '2021-01-01');
SELECT orchestrator.add_task('d', 'a', orchestrator.sql('SELECT 1'));

-- create_dag
SELECT orchestrator.create_dag('bad', '61 * * * *');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.create_dag('bad', '0 0 * * * *');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.create_dag('bad', '@daily', timezone => 'Nowhere/Atlantis');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.create_dag('bad', '@daily', start_date => '2021-02-01', end_date => '2021-01-01');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.create_dag('bad', '@daily', start_date => 'infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.create_dag('bad', max_active_runs => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.create_dag('bad', max_active_tasks => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.create_dag('bad', params => '[1, 2]');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.create_dag('bad', dagrun_timeout => '-1 hour');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.create_dag('bad', catchup => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.create_dag(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.create_dag('bad dag');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.create_dag('');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.create_dag(repeat('x', 251));
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM orchestrator.dags WHERE dag_id <> 'd';

-- add_task
SELECT orchestrator.add_task('nope', 'a', orchestrator.sql('SELECT 1'));
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'a', orchestrator.sql('SELECT 2'));
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', orchestrator.sql('SELECT 1'), upstream => '{missing}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', orchestrator.sql('SELECT 1'), upstream => '{a,b}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', orchestrator.sql('SELECT 1'), upstream => ARRAY['a', NULL]);
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', orchestrator.sql('SELECT 1'), trigger_rule => 'all_good');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', orchestrator.sql('SELECT 1'), retries => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', orchestrator.sql('SELECT 1'), retry_delay => '-5 minutes');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', orchestrator.sql('SELECT 1'), max_retry_delay => '0');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', orchestrator.sql('SELECT 1'), execution_timeout => '-1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b/c', orchestrator.sql('SELECT 1'));
\echo :LAST_ERROR_SQLSTATE
-- a task reading the output of one that produces none
SELECT orchestrator.add_task('d', 'b', orchestrator.gunzip('a'));
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', orchestrator.gunzip('b'));
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', orchestrator.gunzip('missing'));
\echo :LAST_ERROR_SQLSTATE

-- operators: unknown ones, bad arguments, unknown template variables
SELECT orchestrator.add_task('d', 'b', '{"operator": "bash", "command": "rm -rf /"}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', '{"query": "SELECT 1"}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', '"sql"');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', '{"operator": "sql", "query": "SELECT 1", "qeury": "x"}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', '{"operator": "sql"}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', '{"operator": "sql", "query": 42}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', orchestrator.sql('SELECT ''{{ yesterday }}'''));
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', '{"operator": "sql", "query": "SELECT {{ ds"}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', orchestrator.sql('SELECT {{ ds | upper }}'));
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', orchestrator.sql('SELECT {{ params.x | default(''1'' }}'));
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', orchestrator.sql('SELECT {{ nope | default(''1'') }}'));
\echo :LAST_ERROR_SQLSTATE
-- a parameter the DAG does not have is fine with a default
SELECT orchestrator.sql('SELECT {{ params.absent | default(''1'') | quote_literal }}')->>'query';
SELECT orchestrator.sql(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.http_fetch('file:///etc/passwd');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.http_fetch('ftp://example.com/x');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.http_fetch('example.com/x');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.http_fetch('https://example.com/{{ nope }}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.http_fetch('https://example.com/', method => 'FETCH');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.http_fetch('https://example.com/', headers => '{"X-A": 1}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.http_fetch('https://example.com/', headers => '{"X-A": "a\r\nX-Evil: 1"}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.http_fetch('https://example.com/', headers => '{"X-A": "{{ nope }}"}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.http_fetch('https://example.com/', headers => '{"X-A": "{{ ds | nope }}"}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.http_fetch('https://example.com/', body => '{"e": {{ error | tojson( }}}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.http_fetch('https://example.com/', headers => '["X-A"]');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.http_fetch('https://example.com/', timeout => '0');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.http_fetch('https://example.com/', max_bytes => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.gunzip(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t', input => 'a', url => 'https://example.com/');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t;drop', input => 'a');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t_{{ nope }}', input => 'a');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t', input => 'a', format => 'xml');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t', input => 'a', mode => 'upsert');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t', input => 'a', compression => 'zstd');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t', input => 'a', delimiter => ';;');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t', input => 'a', format => 'binary', delimiter => ',');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t', input => 'a', format => 'binary', create_table => true);
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t', input => 'a', columns => 'id int');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t', input => 'a', create_table => true, columns => 'id int) ; DROP TABLE x; --');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t', input => 'a', create_table => true, columns => 'LIKE other');
\echo :LAST_ERROR_SQLSTATE
-- bad rows set aside (on_error), the run's interval as a partition
SELECT orchestrator.copy_into('t', input => 'a', on_error => 'ignore');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t', input => 'a', on_error => NULL);
SELECT orchestrator.copy_into('t', input => 'a', on_error => 'skip', reject_limit => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t', input => 'a', reject_limit => 10);
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t', input => 'a', on_error => 'skip', format => 'binary');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', '{"operator": "copy_into", "target": "t", "input": "a", "on_error": "skip", "reject_limit": 1.5}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', '{"operator": "copy_into", "target": "t", "input": "a", "on_error": "skip", "reject_limit": "10"}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t', input => 'a', mode => 'partition');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t', input => 'a', partition_by => 'at');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t', input => 'a', mode => 'partition', partition_by => '');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.copy_into('t', input => 'a', mode => 'partition', partition_by => repeat('x', 64));
\echo :LAST_ERROR_SQLSTATE
-- create_table was "create" under 0.1: a spec may say either, not both
SELECT orchestrator.add_task('d', 'b', '{"operator": "copy_into", "target": "t", "input": "a", "create": true, "create_table": false}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', '{"operator": "copy_into", "target": "t", "input": "a", "create": "yes"}');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.add_task('d', 'b', '{"operator": "copy_into", "target": "t", "input": "a", "creat": true}');
\echo :LAST_ERROR_SQLSTATE

-- nothing was left behind
SELECT dag_id, task_id FROM orchestrator.tasks ORDER BY dag_id, task_id;
SELECT dag_id FROM orchestrator.dags ORDER BY dag_id;

-- pause, unpause, drop of a DAG that does not exist
SELECT orchestrator.pause_dag('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.unpause_dag('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT orchestrator.drop_dag('nope');
\echo :LAST_ERROR_SQLSTATE

-- in a transaction, an error undoes the whole definition
BEGIN;
SELECT orchestrator.create_dag('half', '@daily');
SELECT orchestrator.add_task('half', 'one', orchestrator.sql('SELECT 1'));
SELECT orchestrator.add_task('half', 'two', orchestrator.sql('SELECT 1'), upstream => '{three}');
COMMIT;
SELECT count(*) FROM orchestrator.dags WHERE dag_id = 'half';
SELECT count(*) FROM orchestrator.tasks WHERE dag_id = 'half';

-- orchestrator.max_tasks_per_dag bounds a DAG's size (a superuser's setting)
SHOW orchestrator.max_tasks_per_dag;
SET orchestrator.max_tasks_per_dag = 2;
SELECT orchestrator.create_dag('big');
SELECT orchestrator.add_task('big', 'one', orchestrator.sql('SELECT 1'));
SELECT orchestrator.add_task('big', 'two', orchestrator.sql('SELECT 1'), upstream => '{one}');
SELECT orchestrator.add_task('big', 'three', orchestrator.sql('SELECT 1'), upstream => '{two}');
\echo :LAST_ERROR_SQLSTATE
SELECT task_id FROM orchestrator.tasks WHERE dag_id = 'big' ORDER BY position;
-- in a transaction, the whole definition is undone
BEGIN;
SELECT orchestrator.create_dag('big2');
SELECT orchestrator.add_task('big2', 'one', orchestrator.sql('SELECT 1'));
SELECT orchestrator.add_task('big2', 'two', orchestrator.sql('SELECT 1'));
SELECT orchestrator.add_task('big2', 'three', orchestrator.sql('SELECT 1'));
COMMIT;
SELECT count(*) FROM orchestrator.dags WHERE dag_id = 'big2';
-- redefining a DAG drops its tasks, so the count starts again
SELECT orchestrator.create_dag('big');
SELECT orchestrator.add_task('big', 'uno', orchestrator.sql('SELECT 1'));
SELECT orchestrator.add_task('big', 'dos', orchestrator.sql('SELECT 1'));
-- a DAG already over a lowered limit keeps its tasks, and gets no more
SET orchestrator.max_tasks_per_dag = 1;
SELECT orchestrator.add_task('big', 'tres', orchestrator.sql('SELECT 1'));
\echo :LAST_ERROR_SQLSTATE
SELECT task_id FROM orchestrator.tasks WHERE dag_id = 'big' ORDER BY position;
SET orchestrator.max_tasks_per_dag = 0;
\echo :LAST_ERROR_SQLSTATE
-- only a superuser sets it
CREATE ROLE regress_orch_small NOLOGIN;
SET ROLE regress_orch_small;
SET orchestrator.max_tasks_per_dag = 100000;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE regress_orch_small;
RESET orchestrator.max_tasks_per_dag;
SELECT orchestrator.add_task('big', 'tres', orchestrator.sql('SELECT 1'));
SELECT orchestrator.drop_dag('big');

SELECT orchestrator.drop_dag('d');
