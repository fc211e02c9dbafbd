# Standbys: nothing is scheduled or run on a standby, and a failover mid-run
# loses nothing and loads nothing twice.  The primary stops at once while a
# streamed load and a chain run; the promoted standby finishes them: the
# tries in flight count as lost and are retried, every table holds each row
# exactly once, and an artifact committed on the primary is read there.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $rows = 600_000;
my $www = PostgreSQL::Test::Utils::tempdir;
open my $fh, '>', "$www/big.csv" or die;
print $fh "id,name\n";
print $fh "$_,name $_\n" for 1 .. $rows;
close $fh;
my $port = start_http_server($www);

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'orchestrator'
orchestrator.database = 'postgres'
orchestrator.max_workers = 2
orchestrator.history_retention = ''
});
$primary->start;
query($primary, qq{
CREATE EXTENSION orchestrator;
CREATE TABLE trips (id bigint, name text);
CREATE TABLE chain_t (step int);
SELECT orchestrator.create_dag('art');
SELECT orchestrator.add_task('art', 'fetch', orchestrator.http_fetch('http://127.0.0.1:$port/files/big.csv'));
SELECT orchestrator.create_dag('load');
SELECT orchestrator.add_task('load', 'copy', orchestrator.copy_into('trips', url => 'http://127.0.0.1:$port/trickle/big.csv'),
                             retries => 2, retry_delay => '0');
SELECT orchestrator.create_dag('chain');
} . join("\n", map {
	"SELECT orchestrator.add_task('chain', 's$_', orchestrator.sql('INSERT INTO chain_t VALUES ($_); SELECT pg_sleep(0.5)'), "
	  . ($_ > 1 ? "'{s" . ($_ - 1) . "}'" : "'{}'") . ", retries => 2, retry_delay => '0');"
} 1 .. 8));
my $art = query($primary, "SELECT orchestrator.trigger_dag('art')");
is(query($primary, "SELECT orchestrator.wait_run($art, '3 minutes')"), 'success', 'an artifact is made on the primary');

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;

# nothing runs on a standby
my $load = query($primary, "SELECT orchestrator.trigger_dag('load')");
my $chain = query($primary, "SELECT orchestrator.trigger_dag('chain')");
wait_for($primary, "SELECT count(*) > 0 FROM orchestrator.progress WHERE run_id = $load AND rows_loaded > 0", 't',
	'the streamed load is under way');
wait_for($primary, "SELECT count(*) >= 2 FROM orchestrator.task_instances WHERE run_id = $chain AND state = 'success'", 't',
	'the chain is half way');
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'orchestrator%'"),
	'0', 'no scheduler and no worker on the standby');
ok(!(grep { /orchestrator/ && !/statement:/ } split /\n/, slurp_file($standby->logfile)),
	'and nothing said about it in the log');

# the primary stops at once; the standby takes over
$primary->stop('immediate');
$standby->promote;
ok($standby->wait_for_log(qr/orchestrator scheduler started/), 'the promoted standby starts its scheduler');
sub sq { return $standby->safe_psql('postgres', $_[0]); }
is(sq("SELECT orchestrator.wait_run($load, '3 minutes')"), 'success', 'the streamed load finishes on the new primary');
is(sq("SELECT orchestrator.wait_run($chain, '3 minutes')"), 'success', 'and the chain');
is(sq('SELECT count(*) || \' \' || count(DISTINCT id) FROM trips'), "$rows $rows", 'each row loaded exactly once');
is(sq('SELECT string_agg(step::text, \',\' ORDER BY step) FROM chain_t'), '1,2,3,4,5,6,7,8', 'each chain step once');
like(sq("SELECT string_agg(message, ' ') FROM orchestrator.task_log WHERE run_id = $load AND level = 'ERROR'"),
	qr/stopped without recording an outcome/, 'the load\'s try in flight counted as lost');
cmp_ok(sq("SELECT try_number FROM orchestrator.task_instances WHERE run_id = $load"), '>=', 2, 'and retried');
is(sq("SELECT count(*) FROM orchestrator.artifact a WHERE a.run_id = $art AND encode(sha256(lo_get(a.loid)), 'hex') = a.sha256"),
	'1', 'the artifact committed on the primary is read on the new primary');
my $next = sq("SELECT orchestrator.trigger_dag('art')");
cmp_ok($next, '>', $chain, 'run ids continue');
is(sq("SELECT orchestrator.wait_run($next, '3 minutes')"), 'success', 'and new runs run');

$standby->stop;
done_testing();
