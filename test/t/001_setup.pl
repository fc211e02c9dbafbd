# CREATE EXTENSION on a server that does not preload the library: it works,
# says clearly that nothing will run, and stops saying so once the library
# is preloaded.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('setup');
$node->init;
$node->start;

my ($ret, $stdout, $stderr) =
  $node->psql('postgres', 'CREATE EXTENSION orchestrator');
is($ret, 0, 'CREATE EXTENSION works without the library preloaded');
like(
	$stderr,
	qr/WARNING:  orchestrator is not loaded through shared_preload_libraries, so no DAG will run/,
	'it warns that nothing will run');
like(
	$stderr,
	qr/HINT:  Add orchestrator to shared_preload_libraries in postgresql.conf and restart the server/,
	'and says what to do');

# definitions work all the same
$node->safe_psql('postgres',
	"SELECT orchestrator.create_dag('d', '\@daily'); "
	  . "SELECT orchestrator.add_task('d', 't', orchestrator.sql('SELECT 1'))");
is($node->safe_psql('postgres', 'SELECT task_count FROM orchestrator.dags'),
	'1', 'a DAG can be defined');

# the settings exist, with their defaults, once the library is loaded
is($node->safe_psql('postgres', "LOAD 'orchestrator'; SHOW orchestrator.max_workers"),
	'4', 'orchestrator.max_workers defaults to 4');

# preloaded, every database with the extension runs its DAGs
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'orchestrator'");
$node->restart;
($ret, $stdout, $stderr) =
  $node->psql('postgres', 'SELECT orchestrator.check_setup()');
is($stdout, 't', 'check_setup() is true once the library is preloaded');
is($stderr, '', 'without a warning');
is($node->safe_psql('postgres', 'SHOW orchestrator.database'),
	'', 'orchestrator.database is empty by default: every database');
is($node->safe_psql('postgres', 'SELECT dag_id FROM orchestrator.dags'),
	'd', 'the DAG defined before is still there');

# in a fresh database, CREATE EXTENSION says nothing: its DAGs run too
$node->safe_psql('postgres', 'CREATE DATABASE other');
($ret, $stdout, $stderr) =
  $node->psql('other', 'CREATE EXTENSION orchestrator');
is($stderr, '', 'in another database, no warning');

# with orchestrator.database set, the warning names the setting
$node->append_conf('postgresql.conf', "orchestrator.database = 'postgres'");
$node->reload;
($ret, $stdout, $stderr) =
  $node->psql('other', 'SELECT orchestrator.check_setup()');
like(
	$stderr,
	qr/WARNING:  DAGs in database "other" will not run: orchestrator.database is "postgres"/,
	'restricted to one database, another says which database runs DAGs');

$node->stop;
done_testing();
