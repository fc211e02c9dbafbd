# Caching, as Prefect's cache_expiration: a task whose output an earlier
# run made from the same request (or input) reuses it while it is fresh,
# without a download; an expired one is revalidated with ETag, and an
# unchanged file is not downloaded again.  On the simulated clock.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Compress::Gzip qw(gzip $GzipError);

my $node = orch_node('cache');
my $www = PostgreSQL::Test::Utils::tempdir;
sub write_gz
{
	my ($text) = @_;
	my $gz;
	gzip(\$text => \$gz) or die $GzipError;
	open my $fh, '>:raw', "$www/data.csv.gz" or die;
	print $fh $gz;
	close $fh;
}
write_gz("id,name\n" . join('', map { "$_,first\n" } 1 .. 100));
my $port = start_http_server($www);
my $base = "http://127.0.0.1:$port";

sub count_requests
{
	open my $fh, '<', "$www/requests.log" or return '0 0';
	my @lines = <$fh>;
	close $fh;
	# downloads, and conditional requests answered 304 (logged as both)
	my $got = grep { /^GET \/files\/data.csv.gz/ } @lines;
	my $not_modified = grep { /^NOT-MODIFIED/ } @lines;
	return ($got - $not_modified) . " $not_modified";
}

set_clock($node, '2021-01-01 00:00+00');
query($node, qq{
SELECT orchestrator.create_dag('cached', params => '{"base": "$base"}');
SELECT orchestrator.add_task('cached', 'fetch', orchestrator.http_fetch('{{ params.base }}/files/data.csv.gz'),
                             cache_expiration => '1 hour');
SELECT orchestrator.add_task('cached', 'unzip', orchestrator.gunzip('fetch'), cache_expiration => '1 hour');
SELECT orchestrator.add_task('cached', 'load', orchestrator.copy_into('t_{{ ds_nodash }}', input => 'unzip', create_table => true));
});
my $day = 1;
sub run_once
{
	my $run = query($node, sprintf("SELECT orchestrator.trigger_dag('cached', logical_date => '2021-01-%02d')", $day++));
	is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', "run $run succeeds");
	return $run;
}
sub cached_flags
{
	my ($run) = @_;
	return query($node, "SELECT string_agg(task_id || '=' || cached, ' ' ORDER BY task_id) FROM orchestrator.task_instances WHERE run_id = $run");
}

my $r1 = run_once();
is(cached_flags($r1), 'fetch=false load=false unzip=false', 'the first run does the work');
is(count_requests(), '1 0', 'one download');

my $r2 = run_once();
is(cached_flags($r2), 'fetch=true load=false unzip=true', 'a run within the hour reuses the fetch and the gunzip');
is(count_requests(), '1 0', 'without downloading');
is(query($node, "SELECT count(DISTINCT loid) FROM orchestrator.artifacts WHERE task_id = 'fetch'"), '1',
	'the runs share one stored copy');
is(query($node, "SELECT count(*) FROM t_20210102"), '100', 'and load the same rows');
like(query($node, "SELECT string_agg(message, E'\\n' ORDER BY id) FROM orchestrator.task_log WHERE run_id = $r2 AND task_id = 'fetch'"),
	qr/cached: the output of an earlier run/, 'the task log says so');

# expired: revalidated with the ETag; unchanged, so not downloaded
set_clock($node, '2021-01-01 02:00+00');
my $r3 = run_once();
# (the gunzip's own entry is older than its hour too: it runs again)
is(cached_flags($r3), 'fetch=true load=false unzip=false', 'after an hour the fetch is revalidated, and is still the same file');
is(count_requests(), '1 1', 'a conditional request answered 304, no download');
like(query($node, "SELECT string_agg(message, E'\\n' ORDER BY id) FROM orchestrator.task_log WHERE run_id = $r3 AND task_id = 'fetch'"),
	qr/\(revalidating\)\n.*not modified \(HTTP 304\)/s, 'the task log says so');

# the file changes: the next expired fetch downloads it
write_gz("id,name\n" . join('', map { "$_,second\n" } 1 .. 150));
utime(time + 10, time + 10, "$www/data.csv.gz");
set_clock($node, '2021-01-01 04:00+00');
my $r4 = run_once();
is(cached_flags($r4), 'fetch=false load=false unzip=false', 'a changed file is downloaded again');
is(count_requests(), '2 1', 'once');
is(query($node, "SELECT count(*) FROM t_20210104"), '150', 'and its new rows are loaded');
my $r5 = run_once();
is(cached_flags($r5), 'fetch=true load=false unzip=true', 'then cached again');

# a server that gives no ETag or Last-Modified (files at its root): after
# the expiration, the file is simply downloaded again
query($node, qq{
SELECT orchestrator.create_dag('plain', params => '{"base": "$base"}');
SELECT orchestrator.add_task('plain', 'fetch', orchestrator.http_fetch('{{ params.base }}/data.csv.gz'), cache_expiration => '1 hour');
});
sub plain_downloads
{
	open my $fh, '<', "$www/requests.log" or return 0;
	my $n = grep { /^GET \/data.csv.gz/ } <$fh>;
	close $fh;
	return $n;
}
my @plain;
for my $clock ('2021-01-01 04:00+00', '2021-01-01 04:30+00', '2021-01-01 06:00+00')
{
	set_clock($node, $clock);
	my $run = query($node, sprintf("SELECT orchestrator.trigger_dag('plain', logical_date => '2021-02-%02d')", scalar(@plain) + 1));
	query($node, "SELECT orchestrator.wait_run($run, '3 minutes')");
	push @plain, query($node, "SELECT cached FROM orchestrator.task_instances WHERE run_id = $run") . ' ' . plain_downloads();
}
is(join(', ', @plain), 'f 1, t 1, f 2', 'without validators: downloaded, then cached, then downloaded again after the hour');

# stored copies are shared, and removed with the last run that uses them
my $los = query($node, "SELECT count(*) FROM pg_largeobject_metadata");
is($los, query($node, "SELECT count(DISTINCT loid) FROM orchestrator.artifacts"), 'one large object per distinct artifact');
query($node, "DELETE FROM orchestrator.dag_run WHERE run_id = $r1");
is(query($node, "SELECT count(*) FROM orchestrator.artifacts a WHERE NOT EXISTS (SELECT 1 FROM pg_largeobject_metadata m WHERE m.oid = a.loid)"),
	'0', 'deleting the run that made a shared copy keeps it for the runs that reuse it');
query($node, "SELECT orchestrator.drop_dag('cached'); SELECT orchestrator.drop_dag('plain')");
is(query($node, "SELECT count(*) FROM pg_largeobject_metadata"), '0', 'dropping the DAG removes them all');

# only tasks that produce an artifact can be cached
my ($rc, $out, $err) = $node->psql('postgres',
	"SELECT orchestrator.create_dag('nocache'); SELECT orchestrator.add_task('nocache', 's', orchestrator.sql('SELECT 1'), cache_expiration => '1 hour')");
like($err, qr/cache_expiration applies only to tasks that produce an artifact/, 'a sql task cannot be cached');

$node->stop;
done_testing();
