# Loads that real data needs: bad rows set aside in orchestrator.rejects
# (each kind with its line number, the limit, row-level security, a kill -9
# mid-load leaving neither rows nor rejects), and runs' data intervals
# loaded as partitions (created, replaced whole while a reader of another
# month holds its transaction open, rows outside the interval set aside or
# failing the load), with a manual run's interval as Airflow gives it.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = orch_node('rejects');
my $www = PostgreSQL::Test::Utils::tempdir;
my $port = start_http_server($www);
my $base = "http://127.0.0.1:$port";

sub write_file
{
	my ($name, $content) = @_;
	open my $fh, '>', "$www/$name" or die;
	print $fh $content;
	close $fh;
}

sub gen_taxi
{
	my ($name, @args) = @_;
	system("$^X $FindBin::Bin/../gen_taxi.pl @args > $www/$name") == 0 or die "gen_taxi.pl failed";
}

# each kind of bad row, with its line as COPY counts them (the header is 1)
write_file('bad.csv', join("\n", (
	'id,v,at,note',                        # 1
	'1,1.5,2021-01-01 10:00,ok',           # 2
	'x,1,2021-01-01,bad int',              # 3  does not convert
	'3,2',                                 # 4  cut short
	'4,1,2021-01-01,a,extra',              # 5  a field too many
	',1,2021-01-01,null id',               # 6  NOT NULL
	'6,-1,2021-01-01,negative',            # 7  CHECK
	'7,1,2021-01-01,"two',                 # 8  a quoted line break: one row,
	'lines"',                              # 9  lines 8 and 9
	'8,1,2021-13-45,bad date',             # 10 out of range
	'9,1,2021-01-02,ok',                   # 11
	'10,1,2021-01-03,"no end')));          # 12 an unterminated quoted field, at the end

query($node, qq{
CREATE ROLE alice NOLOGIN;
CREATE ROLE bob NOLOGIN;
GRANT USAGE ON SCHEMA orchestrator TO alice, bob;
GRANT CREATE ON SCHEMA public TO alice;
SET ROLE alice;
CREATE TABLE t (id int NOT NULL, v numeric CHECK (v >= 0), at timestamp, note text);
CREATE TABLE parted (id int NOT NULL, v numeric, at timestamp, note text) PARTITION BY RANGE (at);
CREATE TABLE parted_2021 PARTITION OF parted FOR VALUES FROM ('2021-01-01') TO ('2021-01-02');
SELECT orchestrator.create_dag('kinds', params => '{"base": "$base"}');
SELECT orchestrator.add_task('kinds', 'load', orchestrator.copy_into('t', url => '{{ params.base }}/files/bad.csv', on_error => 'skip'));
SELECT orchestrator.add_task('kinds', 'parted', orchestrator.copy_into('parted', url => '{{ params.base }}/files/bad.csv', on_error => 'skip'));
SELECT orchestrator.add_task('kinds', 'limit_5', orchestrator.copy_into('t', url => '{{ params.base }}/files/bad.csv', on_error => 'skip', reject_limit => 5),
	upstream => '{load}');
SELECT orchestrator.add_task('kinds', 'limit_7', orchestrator.copy_into('t', url => '{{ params.base }}/files/bad.csv', on_error => 'skip', reject_limit => 7),
	upstream => '{limit_5}', trigger_rule => 'all_done');
SELECT orchestrator.add_task('kinds', 'stop', orchestrator.copy_into('t', url => '{{ params.base }}/files/bad.csv'),
	upstream => '{limit_7}');
});
my $run = query($node, "SET ROLE alice; SELECT orchestrator.trigger_dag('kinds')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'the run ends (its stop task fails)');

is(query($node, "SELECT task_id || ' ' || state || ' ' || coalesce(rows_loaded::text, '-') || ' ' || coalesce(rows_rejected::text, '-')
                 FROM orchestrator.task_instances WHERE run_id = $run ORDER BY task_id"),
	"limit_5 failed - -\nlimit_7 success 3 7\nload success 3 7\nparted success 3 7\nstop failed - -",
	'task_instances shows the rows loaded and the rows set aside');
is(query($node, "SELECT string_agg(format('%s %s %s', line_number, sqlstate, error), E'\\n' ORDER BY line_number)
                 FROM orchestrator.rejects WHERE run_id = $run AND task_id = 'load'"),
	join("\n",
		'3 22P02 column id: invalid input syntax for type integer: "x"',
		'4 22P04 missing data for column "at"',
		'5 22P04 extra data after last expected column',
		'6 23502 null value in column "id" of relation "t" violates not-null constraint',
		'7 23514 new row for relation "t" violates check constraint "t_v_check"',
		'10 22008 column at: date/time field value out of range: "2021-13-45"',
		'12 22P04 unterminated CSV quoted field'),
	'each kind of bad row is set aside with its line number, error and SQLSTATE');
is(query($node, "SELECT raw_line FROM orchestrator.rejects WHERE run_id = $run AND task_id = 'load' AND line_number IN (3, 12) ORDER BY line_number"),
	"x,1,2021-01-01,bad int\n10,1,2021-01-03,\"no end", 'with its raw line');
is(query($node, "SELECT count(*), count(DISTINCT try_number) FROM orchestrator.rejects WHERE run_id = $run AND task_id = 'limit_7'"),
	'7|1', 'a load within its reject_limit keeps its rejects');
is(query($node, "SELECT string_agg(id::text || ' ' || note, ', ' ORDER BY id) FROM t"),
	"1 ok, 1 ok, 7 two\nlines, 7 two\nlines, 9 ok, 9 ok",
	'only the good rows are loaded (twice: by load and limit_7)');

# a partitioned table: a row no partition takes is set aside too
is(query($node, "SELECT string_agg(format('%s %s %s', line_number, sqlstate, error), E'\\n' ORDER BY line_number)
                 FROM orchestrator.rejects WHERE run_id = $run AND task_id = 'parted' AND sqlstate = '23514'"),
	"11 23514 no partition of relation \"parted\" found for row", 'a row outside every partition is set aside');
is(query($node, "SELECT string_agg(id::text, ',' ORDER BY id) FROM parted"), '1,6,7', 'the others land in their partition');

# the limit: past it, the load fails and leaves nothing
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'limit_5'"),
	qr/^copy_into set aside more than 5 bad rows \(reject_limit\): nothing is loaded\nDETAIL:  The first bad rows:\nline 3: column id: invalid input syntax for type integer: "x"\nline 4: /,
	'above reject_limit the load fails, saying why');
is(query($node, "SELECT count(*) FROM orchestrator.rejects WHERE run_id = $run AND task_id IN ('limit_5', 'stop')"),
	'0', 'a failed load leaves no rejects');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run AND task_id = 'stop'"),
	qr/invalid input syntax for type integer: "x"/, "on_error => 'stop' (the default) fails at the first bad row");

# row-level security: the owner sees its rejects, another role none
is(query($node, "SET ROLE alice; SELECT count(*) FROM orchestrator.rejects"), '21', 'the owner reads its rejects');
is(query($node, "SET ROLE bob; SELECT count(*) FROM orchestrator.rejects"), '0', 'another role sees none of them');
my ($rc, $out, $err) = $node->psql('postgres',
	"SET ROLE alice; INSERT INTO orchestrator.rejects VALUES ($run, 'load', 9, 1, 'x', 'x', 'x')");
like($err, qr/permission denied for table rejects/, 'and cannot write them');

# a spec written under 0.1 says "create" for create_table
query($node, qq{
SET ROLE alice;
SELECT orchestrator.create_dag('old_spec', params => '{"base": "$base"}');
SELECT orchestrator.add_task('old_spec', 'load',
	'{"operator": "copy_into", "target": "created_t", "url": "{{ params.base }}/files/bad.csv", "create": true, "on_error": "skip"}');
});
$run = query($node, "SET ROLE alice; SELECT orchestrator.trigger_dag('old_spec')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'a spec with "create" still runs');
# (its inferred id column is text: "x" and the empty id are no longer bad)
is(query($node, "SELECT count(*) FROM created_t"), '6', 'and creates its table');

# --- a kill -9 in the middle of a load leaves neither rows nor rejects
gen_taxi('big.csv', '--month 2021-01 --rows 60000 --bad 60');
query($node, q{
SET ROLE alice;
CREATE TABLE trips ("VendorID" bigint, tpep_pickup_datetime timestamp, tpep_dropoff_datetime timestamp,
	passenger_count bigint, trip_distance float8, "RatecodeID" bigint, store_and_fwd_flag text,
	"PULocationID" bigint, "DOLocationID" bigint, payment_type bigint, fare_amount float8,
	extra float8, mta_tax float8, tip_amount float8, tolls_amount float8,
	improvement_surcharge float8, total_amount float8, congestion_surcharge float8);
});
query($node, qq{
SET ROLE alice;
SELECT orchestrator.create_dag('killed', params => '{"base": "$base"}');
SELECT orchestrator.add_task('killed', 'load',
	orchestrator.copy_into('trips', url => '{{ params.base }}/trickle/big.csv', on_error => 'skip'),
	retries => 1, retry_delay => '0');
});
$run = query($node, "SET ROLE alice; SELECT orchestrator.trigger_dag('killed')");
wait_for($node, "SELECT rows_loaded >= 5000 FROM orchestrator.progress WHERE run_id = $run",
	't', 'the load is under way, some of its rows and rejects written');
my $pid = query($node, "SELECT worker_pid FROM orchestrator.task_instance WHERE run_id = $run");
kill 'KILL', $pid;
$node->poll_query_until('postgres', 'SELECT 1', '1');
is(query($node, "SELECT orchestrator.wait_run($run, '5 minutes')"), 'success', 'after the kill, the retry loads');
# (trips takes rows without a pickup, or outside the month: the short
# lines and the passenger counts that are not numbers are rejects)
is(query($node, "SELECT count(*) FROM trips"), '60036', 'every good row once');
is(query($node, "SELECT try_number, count(*) FROM orchestrator.rejects WHERE run_id = $run GROUP BY 1"),
	'2|24', 'and the rejects of the retry alone: the killed try left none');

# cancel_run in the middle of such a load, once rejects are written (their
# foreign key locks the try's row): the run fails, the load is stopped and
# rolled back, and nothing deadlocks
$run = query($node,
	"SET ROLE alice; SELECT orchestrator.trigger_dag('killed', logical_date => now() + interval '1 day')");
wait_for($node, "SELECT rows_loaded >= 10000 FROM orchestrator.progress WHERE run_id = $run",
	't', 'a second load is under way, with rejects written');
query($node, "SET ROLE alice; SELECT orchestrator.cancel_run($run)");
is(query($node, "SELECT orchestrator.wait_run($run, '5 minutes')"), 'failed', 'cancel_run fails the run');
is(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run"),
	'cancelled by cancel_run()', 'the load says it was cancelled');
is(query($node, "SELECT count(*) FROM trips"), '60036', 'and left no row');
ok(!$node->log_contains('deadlock detected'), 'nothing deadlocked');

# --- partitions: the course pipeline into one table partitioned by month
for my $m ('2021-01', '2021-02')
{
	gen_taxi("yellow_tripdata_$m.csv", "--month $m --rows 3000 --bad 10");
}
query($node, qq{
SET ROLE alice;
CREATE TABLE yellow_taxi (LIKE trips) PARTITION BY RANGE (tpep_pickup_datetime);
CREATE INDEX ON yellow_taxi (tpep_pickup_datetime);
BEGIN;
SELECT orchestrator.create_dag('yt', '\@monthly', start_date => '2021-01-01', end_date => '2021-02-28',
	catchup => true, timezone => 'UTC', params => '{"base": "$base", "how": "files"}');
SELECT orchestrator.add_task('yt', 'ingest',
	orchestrator.copy_into('yellow_taxi', url => '{{ params.base }}/{{ params.how }}/yellow_tripdata_{{ data_interval_start.strftime(''%Y-%m'') }}.csv',
						   mode => 'partition', partition_by => 'tpep_pickup_datetime', on_error => 'skip'));
COMMIT;
});
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'yt' AND state = 'success'",
	'2', 'the scheduled runs of January and February load');
is(query($node, "SELECT tableoid::regclass || ' ' || count(*) || ' ' || min(tpep_pickup_datetime) || ' ' || max(tpep_pickup_datetime)
                 FROM yellow_taxi GROUP BY tableoid ORDER BY 1"),
	"yellow_taxi_2021_01 3000 2021-01-01 00:14:17 2021-01-31 23:19:34\nyellow_taxi_2021_02 3000 2021-02-01 00:09:58 2021-02-28 23:35:36",
	'each month in a partition of its own, created for its interval');
is(query($node, "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'yellow_taxi_2021_02'"),
	"FOR VALUES FROM ('2021-02-01 00:00:00') TO ('2021-03-01 00:00:00')", 'with exactly its bounds');
is(query($node, "SELECT string_agg(conname, ',') FROM pg_constraint WHERE conrelid = 'yellow_taxi_2021_02'::regclass AND contype = 'c'"),
	'', 'and none of the CHECK constraint that spared ATTACH a scan');
is(query($node, "SELECT relowner::regrole FROM pg_class WHERE relname = 'yellow_taxi_2021_02'"), 'alice',
	"owned by the DAG's owner");
is(query($node, "SELECT count(*) FROM pg_indexes WHERE tablename = 'yellow_taxi_2021_02'"), '1', "with the parent's index");
is(query($node, "SELECT string_agg(format('%s %s', r.line_number, r.error), E'\\n' ORDER BY r.line_number)
                 FROM orchestrator.rejects r JOIN orchestrator.dag_runs d USING (run_id)
                 WHERE d.dag_id = 'yt' AND d.logical_date = '2021-02-01' AND r.sqlstate = '23514'"),
	join("\n",
		"820 tpep_pickup_datetime 2009-02-05 12:00:00 is outside the run's data interval [2021-02-01 00:00:00, 2021-03-01 00:00:00)",
		"1093 tpep_pickup_datetime 2021-03-01 00:30:00 is outside the run's data interval [2021-02-01 00:00:00, 2021-03-01 00:00:00)",
		"1366 tpep_pickup_datetime null is outside the run's data interval [2021-02-01 00:00:00, 2021-03-01 00:00:00)",
		"2185 tpep_pickup_datetime 2009-02-05 12:00:00 is outside the run's data interval [2021-02-01 00:00:00, 2021-03-01 00:00:00)",
		"2458 tpep_pickup_datetime 2021-03-01 00:30:00 is outside the run's data interval [2021-02-01 00:00:00, 2021-03-01 00:00:00)",
		"2731 tpep_pickup_datetime null is outside the run's data interval [2021-02-01 00:00:00, 2021-03-01 00:00:00)"),
	'rows outside the interval are rejects');

# a manual run of a scheduled DAG gets the last complete interval before its
# logical date, as in Airflow
query($node, "SET ROLE alice; SELECT orchestrator.pause_dag('yt')");
$run = query($node, "SET ROLE alice; SELECT orchestrator.trigger_dag('yt', '{\"how\": \"trickle\"}', '2021-03-10 12:00+00')");
is(query($node, "SELECT data_interval_start || ' ' || data_interval_end FROM orchestrator.dag_runs WHERE run_id = $run"),
	'2021-02-01 00:00:00+00 2021-03-01 00:00:00+00', "a manual run's interval is the last complete one");
my $on_time = query($node, "SET ROLE alice; SELECT orchestrator.trigger_dag('yt', logical_date => '2021-03-01 00:00+00')");
is(query($node, "SELECT data_interval_start || ' ' || data_interval_end FROM orchestrator.dag_runs WHERE run_id = $on_time"),
	'2021-02-01 00:00:00+00 2021-03-01 00:00:00+00', 'ending at the logical date when it is a schedule time');
query($node, "SET ROLE alice; SELECT orchestrator.cancel_run($on_time)");

# re-running February (a new file, slowly) while a reader holds a
# transaction open on January: the reader waits for nothing, nor does the load
gen_taxi('yellow_tripdata_2021-02.csv', '--month 2021-02 --rows 40000 --seed 2 --bad 4');
my $reader = $node->background_psql('postgres');
is($reader->query_safe("BEGIN; SELECT count(*) FROM yellow_taxi WHERE tpep_pickup_datetime >= '2021-01-01' AND tpep_pickup_datetime < '2021-02-01'"),
	'3000', 'a reader of January holds its transaction open');
query($node, "SET ROLE alice; SELECT orchestrator.unpause_dag('yt')");
wait_for($node, "SELECT rows_loaded > 0 FROM orchestrator.progress WHERE run_id = $run",
	't', 'the load of February is under way');
my $loader = query($node, "SELECT worker_pid FROM orchestrator.task_instance WHERE run_id = $run");
is(query($node, "SELECT string_agg(l.relation::regclass || ' ' || l.mode, ', ' ORDER BY l.relation::regclass::text, l.mode)
                 FROM pg_locks l WHERE l.pid = $loader AND l.relation IN ('yellow_taxi'::regclass, 'yellow_taxi_2021_01'::regclass, 'yellow_taxi_2021_02'::regclass)
                   AND l.granted"),
	'yellow_taxi AccessShareLock, yellow_taxi_2021_02 AccessExclusiveLock, yellow_taxi_2021_02 RowExclusiveLock, yellow_taxi_2021_02 ShareLock',
	'the load locks February alone against readers');
is(query($node, "SELECT count(*) FROM yellow_taxi WHERE tpep_pickup_datetime >= '2021-01-01' AND tpep_pickup_datetime < '2021-02-01'"),
	'3000', 'another reader of January reads meanwhile');
is(query($node, "SELECT state FROM orchestrator.task_instance WHERE run_id = $run"), 'running', 'while the load goes on');
is(query($node, "SELECT orchestrator.wait_run($run, '5 minutes')"), 'success',
	'the load ends while the reader of January holds its transaction open');
is(query($node, "SELECT tableoid::regclass || ' ' || count(*) FROM yellow_taxi GROUP BY tableoid ORDER BY 1"),
	"yellow_taxi_2021_01 3000\nyellow_taxi_2021_02 40000", 'February is replaced whole, January untouched');
is(query($node, "SELECT rows_rejected FROM orchestrator.task_instances WHERE run_id = $run"), '4', 'with its own rejects');

# a new month is attached while the reader still holds January
gen_taxi('yellow_tripdata_2021-03.csv', '--month 2021-03 --rows 500');
$run = query($node, "SET ROLE alice; SELECT orchestrator.trigger_dag('yt', logical_date => '2021-04-02 06:00+00')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'a new partition is attached meanwhile too');
is(query($node, "SELECT count(*) FROM yellow_taxi_2021_03"), '500', 'with its month');
is($reader->query_safe("SELECT count(*) FROM yellow_taxi WHERE tpep_pickup_datetime >= '2021-01-01' AND tpep_pickup_datetime < '2021-02-01'; COMMIT"),
	'3000', 'and the reader of January read on undisturbed');
$reader->quit;

# with on_error => 'stop', a row outside the interval fails the load, which
# leaves the partition as it was
gen_taxi('yellow_tripdata_2021-01.csv', '--month 2021-01 --rows 100 --bad 4');
query($node, qq{
SET ROLE alice;
SELECT orchestrator.create_dag('yt_stop', '\@monthly', timezone => 'UTC', paused => true, params => '{"base": "$base"}');
SELECT orchestrator.add_task('yt_stop', 'ingest',
	orchestrator.copy_into('yellow_taxi', url => '{{ params.base }}/files/yellow_tripdata_{{ data_interval_start.strftime(''%Y-%m'') }}.csv',
						   mode => 'partition', partition_by => 'tpep_pickup_datetime'));
SELECT orchestrator.unpause_dag('yt_stop');
});
$run = query($node, "SET ROLE alice; SELECT orchestrator.trigger_dag('yt_stop', logical_date => '2021-02-01 00:00+00')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', "with on_error => 'stop' a bad row fails the load");
is(query($node, "SELECT count(*) FROM yellow_taxi_2021_01"), '3000', 'and the partition keeps its rows');

# a partition load needs an interval, and the partition of exactly it
query($node, qq{
SET ROLE alice;
SELECT orchestrator.create_dag('no_schedule', params => '{"base": "$base"}');
SELECT orchestrator.add_task('no_schedule', 'ingest',
	orchestrator.copy_into('yellow_taxi', url => '{{ params.base }}/files/yellow_tripdata_2021-03.csv',
						   mode => 'partition', partition_by => 'tpep_pickup_datetime'));
SELECT orchestrator.create_dag('weekly', '\@weekly', timezone => 'UTC', paused => true, params => '{"base": "$base"}');
SELECT orchestrator.add_task('weekly', 'ingest',
	orchestrator.copy_into('yellow_taxi', url => '{{ params.base }}/files/yellow_tripdata_2021-03.csv',
						   mode => 'partition', partition_by => 'tpep_pickup_datetime'));
SELECT orchestrator.unpause_dag('weekly');
});
$run = query($node, "SET ROLE alice; SELECT orchestrator.trigger_dag('no_schedule')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'a run without an interval fails');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run"),
	qr/^the run's data interval is empty, so there is no partition to load/, 'saying why');
$run = query($node, "SET ROLE alice; SELECT orchestrator.trigger_dag('weekly', logical_date => '2021-03-10 00:00+00')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'a week inside a monthly partition fails');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run"),
	qr/^partition yellow_taxi_2021_02 of table public.yellow_taxi covers \[2021-02-01 00:00:00, 2021-03-01 00:00:00\), which overlaps the run's data interval \[2021-02-28 00:00:00, 2021-03-07 00:00:00\) without being it/,
	'naming the partition in the way');

# another role may not create partitions of alice's table
query($node, qq{
GRANT INSERT ON yellow_taxi TO bob;
SET ROLE bob;
SELECT orchestrator.create_dag('bob_yt', '\@monthly', timezone => 'UTC', paused => true, params => '{"base": "$base"}');
SELECT orchestrator.add_task('bob_yt', 'ingest',
	orchestrator.copy_into('public.yellow_taxi', url => '{{ params.base }}/files/yellow_tripdata_2021-03.csv',
						   mode => 'partition', partition_by => 'tpep_pickup_datetime'));
SELECT orchestrator.unpause_dag('bob_yt');
});
$run = query($node, "SET ROLE bob; SELECT orchestrator.trigger_dag('bob_yt', logical_date => '2021-06-02 00:00+00')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', "a role that does not own the table cannot add its partition");
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run"),
	qr/^must be owner of table public.yellow_taxi to create its partition/, 'it is told why');
$run = query($node, "SET ROLE bob; SELECT orchestrator.trigger_dag('bob_yt', logical_date => '2021-03-02 00:00+00')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', 'nor replace one');
like(query($node, "SELECT error FROM orchestrator.task_instances WHERE run_id = $run"),
	qr/^permission denied for table yellow_taxi_2021_02/, 'TRUNCATE being refused');
is(query($node, "SELECT count(*) FROM yellow_taxi_2021_02"), '40000', 'and February is as it was');

$node->stop;
done_testing();
