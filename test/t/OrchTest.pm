# Helpers for the orchestrator TAP suites: a cluster with the library
# preloaded and the extension created, the simulated clock, and waits.
package OrchTest;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(orch_node set_clock wait_for query);

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

sub query
{
	my ($node, $sql) = @_;
	return $node->safe_psql('postgres', $sql);
}

1;
