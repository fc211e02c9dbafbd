# The examples work as written: examples/yellow_taxi.sql (a sensor for the
# month's file, download, unzip, ingest, and a monthly summary DAG on the
# loaded month's asset), examples/yellow_taxi_stream.sql (streamed ingest and a daily
# summary), examples/yellow_taxi_partitioned.sql (a partition per month,
# bad rows set aside) and examples/taxi_colours.sql (yellow and green through
# one mapped pipeline), on generated months served by the local HTTP server.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = orch_node('examples');
my $www = PostgreSQL::Test::Utils::tempdir;
my %rows = ('2021-01' => 3000, '2021-02' => 2000, '2021-03' => 2500);
for my $m (sort keys %rows)
{
	system("$^X $FindBin::Bin/../gen_taxi.pl --month $m --rows $rows{$m} | gzip > $www/yellow_tripdata_$m.csv.gz") == 0
	  or die "generating $m failed";
}
# green trips for January (examples/taxi_colours.sql)
system("$^X $FindBin::Bin/../gen_taxi.pl --month 2021-01 --rows 1200 --colour green | gzip > $www/green_tripdata_2021-01.csv.gz") == 0
  or die "generating green 2021-01 failed";
my $port = start_http_server($www);

# the same months with a few rows that do not fit (gen_taxi.pl --bad)
my $www_bad = PostgreSQL::Test::Utils::tempdir;
for my $m (sort keys %rows)
{
	system("$^X $FindBin::Bin/../gen_taxi.pl --month $m --rows $rows{$m} --bad 5 | gzip > $www_bad/yellow_tripdata_$m.csv.gz") == 0
	  or die "generating $m failed";
}
my $port_bad = start_http_server($www_bad);

sub run_example
{
	my ($file, $port) = @_;
	open my $fh, '<', "$FindBin::Bin/../examples/$file" or die "$file: $!";
	my $sql = do { local $/; <$fh> };
	close $fh;
	$sql =~ s{http://127\.0\.0\.1:8000}{http://127.0.0.1:$port}g;
	$node->safe_psql('postgres', $sql);
}

# --- examples/yellow_taxi.sql
run_example('yellow_taxi.sql', $port);
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'yellow_taxi' AND state = 'success'",
	'3', 'yellow_taxi.sql: three monthly runs succeed');
is(query($node, "SELECT string_agg(to_char(logical_date AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), ' ' ORDER BY logical_date) FROM orchestrator.dag_runs WHERE dag_id = 'yellow_taxi'"),
	'2021-01-02 06:00 2021-02-02 06:00 2021-03-02 06:00', 'with the course schedule\'s logical dates');
is(query($node, "SELECT count(*) FROM yellow_taxi_2021_01") . ' ' . query($node, "SELECT count(*) FROM yellow_taxi_2021_02")
	  . ' ' . query($node, "SELECT count(*) FROM yellow_taxi_2021_03"),
	'3000 2000 2500', 'each month in its own table');
is( query($node,
		"SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'yellow_taxi_2021_01'::regclass AND attnum > 0"),
	'VendorID bigint, tpep_pickup_datetime timestamp without time zone, tpep_dropoff_datetime timestamp without time zone, '
	  . 'passenger_count bigint, trip_distance double precision, RatecodeID bigint, store_and_fwd_flag text, '
	  . 'PULocationID bigint, DOLocationID bigint, payment_type bigint, fare_amount double precision, extra double precision, '
	  . 'mta_tax double precision, tip_amount double precision, tolls_amount double precision, '
	  . 'improvement_surcharge double precision, total_amount double precision, congestion_surcharge double precision',
	'the tables are created from the data: its 18 columns, with fitting types');
cmp_ok(query($node, 'SELECT count(*) FROM yellow_taxi_2021_01 WHERE "VendorID" IS NULL'), '>', 0,
	'empty fields load as NULL');
is(query($node, "SELECT string_agg(state || ' ' || try_number, ', ' ORDER BY run_id) FROM orchestrator.task_instances WHERE dag_id = 'yellow_taxi' AND task_id = 'wait_for_file'"),
	'success 1, success 1, success 1', 'each run began with a sensor that found its month\'s file');
# the summary DAG runs on the asset of each loaded month
wait_for($node, "SELECT string_agg(to_char(month, 'YYYY-MM') || ' ' || trips, ', ' ORDER BY month) FROM yellow_taxi_monthly",
	'2021-01 3000, 2021-02 2000, 2021-03 2500', 'yellow_taxi_monthly: a line per loaded month, built on its asset');
is(query($node, "SELECT count(*) > 0 AND bool_and(run_type = 'asset_triggered') FROM orchestrator.dag_runs WHERE dag_id = 'yellow_taxi_monthly'"),
	't', 'in asset-triggered runs');
is(query($node, "SELECT name || ' ' || events || ' ' || consumers::text FROM orchestrator.assets WHERE name = 'yellow_taxi.loaded_month'"),
	'yellow_taxi.loaded_month 3 {yellow_taxi_monthly}', 'three events of the asset, and its consumer');

# --- examples/yellow_taxi_stream.sql
run_example('yellow_taxi_stream.sql', $port);
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'yellow_taxi_stream' AND state = 'success'",
	'3', 'yellow_taxi_stream.sql: three monthly runs succeed');
is(query($node, "SELECT count(*) || ' ' || sum(trips) FROM yellow_taxi_daily"), '90 7500',
	'the daily summary has every day of the three months, and every trip');
is(query($node, "SELECT sum(trips) FROM yellow_taxi_daily WHERE day < '2021-02-01'"), '3000', 'January alone');

# a month run again (cleared) replaces its rows and its days, never doubles them
my $run = query($node, "SELECT run_id FROM orchestrator.dag_runs WHERE dag_id = 'yellow_taxi_stream' ORDER BY logical_date LIMIT 1");
query($node, "SELECT orchestrator.clear_task($run, 'ingest')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'a cleared month runs again');
is(query($node, "SELECT count(*) FROM yellow_taxi_stream_2021_01") . ' ' . query($node, "SELECT sum(trips) FROM yellow_taxi_daily"),
	'3000 7500', 'with nothing counted twice');

# --- examples/yellow_taxi_partitioned.sql (its partitions take the names of
# the first example's tables)
query($node, "DROP TABLE yellow_taxi_2021_01, yellow_taxi_2021_02, yellow_taxi_2021_03");
run_example('yellow_taxi_partitioned.sql', $port_bad);
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'yellow_taxi_partitioned' AND state = 'success'",
	'3', 'yellow_taxi_partitioned.sql: three monthly runs succeed');
is(query($node, "SELECT string_agg(tableoid::regclass || ' ' || n, ', ' ORDER BY tableoid::regclass::text)
                 FROM (SELECT tableoid, count(*) AS n FROM yellow_taxi GROUP BY 1) p"),
	'yellow_taxi_2021_01 3000, yellow_taxi_2021_02 2000, yellow_taxi_2021_03 2500', 'each month in its partition');
is(query($node, "SELECT string_agg(rows_rejected::text, ' ' ORDER BY run_id) FROM orchestrator.task_instances WHERE dag_id = 'yellow_taxi_partitioned'"),
	'5 5 5', 'the rows that do not fit set aside');
is(query($node, "SELECT string_agg(DISTINCT sqlstate, ' ') FROM orchestrator.rejects"), '22P02 22P04 23514',
	'a line cut short, a value that does not parse, a pickup outside the month');
$run = query($node, "SELECT orchestrator.trigger_dag('yellow_taxi_partitioned', logical_date => '2021-03-15')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'a manual run loads the last complete month');
is(query($node, "SELECT count(*) FROM yellow_taxi") . ' ' . query($node, "SELECT count(*) FROM yellow_taxi_2021_02"),
	'7500 2000', 'February, replaced whole');

# --- examples/taxi_colours.sql: one pipeline mapped over the colours
run_example('taxi_colours.sql', $port);
wait_for($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE dag_id = 'taxi_colours' AND state = 'success'",
	'1', 'taxi_colours.sql: the January run succeeds');
is(query($node, "SELECT count(*) FROM yellow_trips_2021_01") . ' ' . query($node, "SELECT count(*) FROM green_trips_2021_01"),
	'3000 1200', 'each colour in its own table');
is( query($node,
		"SELECT string_agg(task_id || '[' || map_index || ']=' || (map_item #>> '{}') || ' ' || state, ', ' ORDER BY position, map_index) "
		  . "FROM orchestrator.task_instances JOIN orchestrator.tasks USING (dag_id, task_id) WHERE dag_id = 'taxi_colours'"),
	'download[0]=yellow success, download[1]=green success, unzip[0]=yellow success, unzip[1]=green success, '
	  . 'ingest[0]=yellow success, ingest[1]=green success',
	'download, unzip and ingest each ran once per colour, unzip and ingest mapped like download');
like(query($node, "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'green_trips_2021_01'::regclass AND attnum > 0"),
	qr/^VendorID,lpep_pickup_datetime,/, 'the green table has the green columns');

$node->stop;
done_testing();
