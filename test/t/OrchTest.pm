# Helpers for the orchestrator TAP suites: a cluster with the library
# preloaded and the extension created, the simulated clock, and waits.
package OrchTest;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;

our @EXPORT = qw(orch_node set_clock wait_for query start_http_server);

# A started cluster running the DAGs of database "postgres".
sub orch_node
{
	my ($name, $extra_conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'orchestrator'
orchestrator.database = 'postgres'
orchestrator.max_workers = 4
max_worker_processes = 16
restart_after_crash = on
orchestrator.history_retention = ''
} . ($extra_conf // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION orchestrator');
	return $node;
}

# Sets the time the scheduler and workers go by ('' for the real clock).
sub set_clock
{
	my ($node, $time) = @_;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET orchestrator.test_clock = '$time';\nSELECT pg_reload_conf();");
}

# Waits (generously: the default of PostgreSQL::Test::Utils, 180 s) until
# the query returns the expected value; one test.
sub wait_for
{
	my ($node, $sql, $expected, $what) = @_;
	my $ok = $node->poll_query_until('postgres', $sql, $expected);
	ok($ok, $what);
	diag("last result of: $sql\n" . $node->safe_psql('postgres', $sql)) unless $ok;
	return $ok;
}

# Starts test/http_server.pl on a free port, serving $root; returns the
# port.  The server stops when the test ends.
my @servers;

sub start_http_server
{
	my ($root) = @_;
	my $port_file = "$root/port";
	unlink $port_file;
	my $pid = fork;
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		exec($^X, "$FindBin::Bin/../http_server.pl", '--root', $root, '--port-file', $port_file)
		  or die "exec: $!";
	}
	push @servers, $pid;
	for (1 .. 100)
	{
		last if -s $port_file;
		select(undef, undef, undef, 0.1);
	}
	open my $fh, '<', $port_file or die "the HTTP test server did not start";
	my $port = <$fh>;
	chomp $port;
	return $port;
}

END { kill 'TERM', @servers if @servers; }

sub query
{
	my ($node, $sql) = @_;
	return $node->safe_psql('postgres', $sql);
}

1;
