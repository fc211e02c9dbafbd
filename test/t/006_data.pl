# Moving data: http_fetch, gunzip and copy_into, against a local HTTP server
# that misbehaves on request.  Every failure ends with a clear error and
# the target unchanged; a worker killed mid-COPY is retried and loads the
# exact row count; CSV edge cases load exactly.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Digest::SHA qw(sha256_hex);
use IO::Compress::Gzip qw(gzip $GzipError);

my $node = orch_node('data');

# --- the data, made here, deterministically
my $www = PostgreSQL::Test::Utils::tempdir;
sub write_file { my ($name, $data) = @_; open my $fh, '>:raw', "$www/$name" or die; print $fh $data; close $fh; }
sub gz { my ($data) = @_; my $out; gzip(\$data => \$out) or die $GzipError; return $out; }

my $binary = join('', map { chr($_ % 256) } 0 .. 300_000) . ("\0" x 1000);
write_file('binary.bin', $binary);

my $big = "id,name,amount\n" . join('', map { "$_,name $_," . ($_ % 1000) / 10 . "\n" } 1 .. 200_000);
write_file('big.csv', $big);
write_file('big.csv.gz', gz($big));

my $part1 = "id,name,amount\n" . join('', map { "$_,first $_,$_.5\n" } 1 .. 1000);
my $part2 = join('', map { "$_,second $_,$_.25\n" } 1001 .. 2000);
write_file('multi.csv.gz', gz($part1) . gz($part2));

my $bigz = gz($big);
write_file('truncated.csv.gz', substr($bigz, 0, int(length($bigz) * 0.6)));
# an unknown compression method in the header: fails at once
my $corrupt = $bigz;
substr($corrupt, 2, 1) = chr(9);
write_file('corrupt.csv.gz', $corrupt);
# damage in the middle of the deflate data: found at the latest by the CRC
my $damaged = $bigz;
substr($damaged, int(length($damaged) / 2), 64) = 'X' x 64;
write_file('damaged.csv.gz', $damaged);

# quoted delimiters and line breaks, doubled quotes, CRLF, UTF-8, empty fields
write_file('edge.csv', join("\r\n",
	'id,name,note,amount,day',
	'1,"Smith, John","line one' . "\r\n" . 'line two",1.5,2021-01-01',
	'2,Zoë Ærø 東京,"he said ""hi""",,2021-01-02',
	'3,,"",2.25,',
	'4,"tab	in",plain,-7,2021-12-31') . "\r\n");

my $port = start_http_server($www);
my $base = "http://127.0.0.1:$port";
query($node, "CREATE TABLE keep (id bigint, name text, amount float8); INSERT INTO keep SELECT i, 'kept', 0 FROM generate_series(1, 5) i");

sub run_dag
{
	my ($dag) = @_;
	my $run = query($node, "SELECT orchestrator.trigger_dag('$dag')");
	return ($run, query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"));
}

# --- http_fetch: binary-safe, with size, status, type and checksum
query($node, qq{
SELECT orchestrator.create_dag('fetch', params => '{"base": "$base"}');
SELECT orchestrator.add_task('fetch', 'bin', orchestrator.http_fetch('{{ params.base }}/files/binary.bin'));
SELECT orchestrator.add_task('fetch', 'multi', orchestrator.http_fetch('{{ params.base }}/chunked/multi.csv.gz'));
SELECT orchestrator.add_task('fetch', 'unzip', orchestrator.gunzip('multi'));
SELECT orchestrator.add_task('fetch', 'load', orchestrator.copy_into('multi_t', input => 'unzip', create_table => true));
SELECT orchestrator.add_task('fetch', 'load_gz', orchestrator.copy_into('multi_gz_t', input => 'multi', create_table => true));
});
my ($run, $state) = run_dag('fetch');
is($state, 'success', 'http_fetch, gunzip and copy_into(input) run');
is( query($node, "SELECT size || ' ' || sha256 || ' ' || content_type || ' ' || http_status FROM orchestrator.artifacts WHERE run_id = $run AND task_id = 'bin'"),
	length($binary) . ' ' . sha256_hex($binary) . ' application/octet-stream 200',
	'the artifact records size, checksum, type and status');
is(query($node, "SELECT encode(sha256(lo_get(loid)), 'hex') FROM orchestrator.artifacts WHERE run_id = $run AND task_id = 'bin'"),
	sha256_hex($binary), 'the stored bytes are exactly the body (binary-safe, NUL bytes included)');
is(query($node, "SELECT size || ' ' || sha256 FROM orchestrator.artifacts WHERE run_id = $run AND task_id = 'unzip'"),
	length($part1 . $part2) . ' ' . sha256_hex($part1 . $part2), 'a multi-member gzip file decompresses whole');
is(query($node, "SELECT count(*) || ' ' || sum(amount) FROM multi_t"), '2000 2001750', 'and loads whole');
is(query($node, "SELECT count(*) FROM multi_gz_t"), '2000', 'copy_into recognises gzip by its magic bytes');
is(query($node, "SELECT string_agg(task_id || '=' || coalesce(rows_loaded::text, '-'), ' ' ORDER BY task_id) FROM orchestrator.task_instances WHERE run_id = $run"),
	'bin=- load=2000 load_gz=2000 multi=- unzip=-', 'rows_loaded is recorded for copy tasks');
like(query($node, "SELECT string_agg(message, E'\n' ORDER BY id) FROM orchestrator.task_log WHERE run_id = $run AND task_id = 'bin'"),
	qr/fetching http:\S+binary.bin\nHTTP 200, application\/octet-stream, @{[length($binary)]} bytes in [\d.]+ s, sha256 @{[sha256_hex($binary)]}/,
	'the task log says what was fetched');
like(query($node, "SELECT string_agg(message, E'\n' ORDER BY id) FROM orchestrator.task_log WHERE run_id = $run AND task_id IN ('unzip', 'load')"),
	qr/gunzip: \d+ bytes in, @{[length($part1 . $part2)]} bytes out in [\d.]+ s\n.*loaded 2000 rows into multi_t \(@{[length($part1 . $part2)]} bytes read\) in/s,
	'and what was unzipped and loaded');
is(query($node, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'multi_t'::regclass AND attnum > 0 ORDER BY attnum"),
	"bigint\ntext\ndouble precision", 'create_table => true infers column types from the data');

# --- copy_into(url): streamed, chunked, gzip on the fly; CSV edge cases
query($node, qq{
SELECT orchestrator.create_dag('stream', params => '{"base": "$base"}');
SELECT orchestrator.add_task('stream', 'big', orchestrator.copy_into('big_t', url => '{{ params.base }}/chunked/big.csv.gz', create_table => true));
SELECT orchestrator.add_task('stream', 'edge', orchestrator.copy_into('edge_t', url => '{{ params.base }}/files/edge.csv', create_table => true));
SELECT orchestrator.add_task('stream', 'typed', orchestrator.copy_into('typed_t', url => '{{ params.base }}/redirect/3/edge.csv', create_table => true,
                             columns => 'id int, name text, note text, amount numeric(8,2), day date'));
});
($run, $state) = run_dag('stream');
is($state, 'success', 'copy_into(url) streams into tables');
is(query($node, "SELECT count(*) || ' ' || sum(id) FROM big_t"), '200000 20000100000', '200,000 rows through gunzip, exactly');
is( query($node,
		"SELECT string_agg(concat_ws('|', id, coalesce(name, '<null>'), coalesce(note, '<null>'), coalesce(amount::text, '<null>'), coalesce(day::text, '<null>')), E'\\n' ORDER BY id) FROM edge_t"),
	"1|Smith, John|line one\r\nline two|1.5|2021-01-01\n2|Zoë Ærø 東京|he said \"hi\"|<null>|2021-01-02\n3|<null>||2.25|<null>\n4|tab\tin|plain|-7|2021-12-31",
	'quoted delimiters and line breaks, quotes, CRLF, UTF-8, and empty fields as NULL load exactly');
is(query($node, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'typed_t'::regclass AND attnum > 0 ORDER BY attnum"),
	"integer\ntext\ntext\nnumeric(8,2)\ndate", 'create_table => true with columns uses them, after redirects');

# --- every way to fail: a clear error, and the target unchanged
query($node, qq{
SELECT orchestrator.create_dag('failures', params => '{"base": "$base"}');
SELECT orchestrator.add_task('failures', 'not_found', orchestrator.copy_into('keep', url => '{{ params.base }}/status/404'));
SELECT orchestrator.add_task('failures', 'server_error', orchestrator.copy_into('keep', url => '{{ params.base }}/status/500'));
SELECT orchestrator.add_task('failures', 'slow', orchestrator.http_fetch('{{ params.base }}/slow/30/edge.csv', timeout => '1 second'));
SELECT orchestrator.add_task('failures', 'short', orchestrator.copy_into('keep', url => '{{ params.base }}/short/big.csv'));
SELECT orchestrator.add_task('failures', 'reset', orchestrator.copy_into('keep', url => '{{ params.base }}/reset/big.csv'));
SELECT orchestrator.add_task('failures', 'truncated', orchestrator.copy_into('keep', url => '{{ params.base }}/files/truncated.csv.gz'));
SELECT orchestrator.add_task('failures', 'corrupt', orchestrator.copy_into('keep', url => '{{ params.base }}/files/corrupt.csv.gz'));
SELECT orchestrator.add_task('failures', 'loop', orchestrator.copy_into('keep', url => '{{ params.base }}/loop'));
SELECT orchestrator.add_task('failures', 'too_big', orchestrator.http_fetch('{{ params.base }}/chunked/big.csv', max_bytes => 100000));
SELECT orchestrator.add_task('failures', 'bad_rows', orchestrator.copy_into('keep', url => '{{ params.base }}/files/edge.csv'));
SELECT orchestrator.add_task('failures', 'no_table', orchestrator.copy_into('missing_t', url => '{{ params.base }}/files/edge.csv'));
SELECT orchestrator.add_task('failures', 'gunzip_plain', orchestrator.gunzip('slow'));
SELECT orchestrator.add_task('failures', 'fetch_damaged', orchestrator.http_fetch('{{ params.base }}/files/damaged.csv.gz'));
SELECT orchestrator.add_task('failures', 'gunzip_damaged', orchestrator.gunzip('fetch_damaged'));
SELECT orchestrator.add_task('failures', 'copy_damaged', orchestrator.copy_into('keep', url => '{{ params.base }}/files/damaged.csv.gz'));
});
($run, $state) = run_dag('failures');
is($state, 'failed', 'a run of failing tasks fails');
my %error = map { split /\|/, $_, 2 } split /\n/,
  query($node, "SELECT task_id || '|' || regexp_replace(coalesce(error, state), E'\\n.*', '', 's') FROM orchestrator.task_instances WHERE run_id = $run");
like($error{not_found}, qr/^HTTP status 404 from http:/, '404: HTTP status 404');
like($error{server_error}, qr/^HTTP status 500 from/, '500: HTTP status 500');
like($error{slow}, qr/^timed out fetching/, 'slow: timed out');
like($error{short}, qr/ended early, after \d+ bytes/, 'a body shorter than its Content-Length');
like($error{reset}, qr/ended early|could not fetch/, 'a connection closed mid-body');
like($error{truncated}, qr/^gzip data is truncated/, 'a truncated gzip file');
like($error{corrupt}, qr/^gzip data is corrupt/, 'a corrupt gzip file');
like($error{loop}, qr/^more than 10 redirects/, 'a redirect loop');
like($error{too_big}, qr/larger than max_bytes \(100000\)/, 'a body over max_bytes');
like($error{gunzip_damaged}, qr/^gzip data is corrupt: (incorrect data check|invalid)/, 'damage inside the deflate data');
like($error{copy_damaged}, qr/gzip data is corrupt|invalid input syntax|extra data|missing data/,
	'streamed into a table, it fails too (COPY may see the garbage first)');
like($error{bad_rows}, qr/extra data after last expected column/, 'rows that do not fit the table: COPY\'s own error');
like($error{no_table}, qr/^target table missing_t does not exist/, 'a missing table without create');
is($error{gunzip_plain}, 'upstream_failed', 'downstream of a failure');
is(query($node, "SELECT count(*) || ' ' || min(name) FROM keep"), '5 kept', 'the target is unchanged after every failure');
is(query($node, "SELECT count(*) FROM orchestrator.artifacts a JOIN orchestrator.task_instances ti USING (run_id, task_id) WHERE a.run_id = $run AND ti.state <> 'success'"),
	'0', 'no artifact from a failed task');

# --- 503, then 200: retried, then loaded once
query($node, qq{
SELECT orchestrator.create_dag('flaky', params => '{"base": "$base"}');
SELECT orchestrator.add_task('flaky', 'load', orchestrator.copy_into('flaky_t', url => '{{ params.base }}/flaky/k1/2/edge.csv', create_table => true),
                             retries => 3, retry_delay => '0');
});
($run, $state) = run_dag('flaky');
is($state, 'success', '503, 503, then 200: retried until it loads');
is(query($node, "SELECT try_number || ' ' || rows_loaded FROM orchestrator.task_instances WHERE run_id = $run"), '3 4', 'on the third try');
is(query($node, "SELECT count(*) FROM flaky_t"), '4', 'exactly once');

# --- mode => replace: a cleared task run again replaces, never duplicates
query($node, qq{
SELECT orchestrator.create_dag('replace', params => '{"base": "$base"}');
SELECT orchestrator.add_task('replace', 'load', orchestrator.copy_into('rep_t', url => '{{ params.base }}/files/edge.csv', create_table => true, mode => 'replace'));
});
($run, $state) = run_dag('replace');
query($node, "SELECT orchestrator.clear_task($run, 'load')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'a replace task runs again');
is(query($node, "SELECT count(*) FROM rep_t"), '4', 'and replaces the rows');

# --- permissions, as a non-superuser owner
query($node, q{
CREATE ROLE dana NOLOGIN;
GRANT USAGE ON SCHEMA orchestrator TO dana;
GRANT CREATE ON SCHEMA public TO dana;
CREATE TABLE no_insert (id bigint, name text, note text, amount float8, day date);
GRANT SELECT ON no_insert TO dana;
-- (a table's owner bypasses its row-level security, for COPY as for all)
CREATE TABLE dana_rls (id bigint, name text, note text, amount float8, day date);
GRANT SELECT, INSERT ON dana_rls TO dana;
ALTER TABLE dana_rls ENABLE ROW LEVEL SECURITY;
CREATE POLICY anything ON dana_rls USING (true);
});
query($node, qq{
SET ROLE dana;
SELECT orchestrator.create_dag('dana', params => '{"base": "$base"}');
SELECT orchestrator.add_task('dana', 'no_insert', orchestrator.copy_into('no_insert', url => '{{ params.base }}/files/edge.csv'));
SELECT orchestrator.add_task('dana', 'rls', orchestrator.copy_into('dana_rls', url => '{{ params.base }}/files/edge.csv'));
SELECT orchestrator.add_task('dana', 'own', orchestrator.copy_into('dana_t', url => '{{ params.base }}/files/edge.csv', create_table => true));
SELECT orchestrator.add_task('dana', 'fetch', orchestrator.http_fetch('{{ params.base }}/files/edge.csv'));
});
$run = query($node, "SET ROLE dana; SELECT orchestrator.trigger_dag('dana')");
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'failed', "a non-superuser's data tasks run");
%error = map { split /\|/, $_, 2 } split /\n/,
  query($node, "SELECT task_id || '|' || regexp_replace(coalesce(error, state), E'\\n.*', '', 's') FROM orchestrator.task_instances WHERE run_id = $run");
like($error{no_insert}, qr/permission denied for table no_insert/, 'copy_into needs INSERT on the target');
like($error{rls}, qr/row-level security/, 'and refuses a table under row-level security');
is($error{own}, 'success', 'it loads a table of its own');
is(query($node, "SELECT tableowner FROM pg_tables WHERE tablename = 'dana_t'"), 'dana', 'which it created as the owner');
is(query($node, "SELECT pg_get_userbyid(lomowner) FROM pg_largeobject_metadata m JOIN orchestrator.artifact a ON a.loid = m.oid WHERE a.run_id = $run"),
	'dana', "the artifact belongs to the DAG's owner");
is(query($node, "SET ROLE dana; SELECT count(*) FROM orchestrator.artifacts"), '1', 'who sees her artifact');
is(query($node, "CREATE ROLE erin NOLOGIN; GRANT USAGE ON SCHEMA orchestrator TO erin; SET ROLE erin; SELECT count(*) FROM orchestrator.artifacts"),
	'0', 'and nobody else does');
my ($rc, $out, $err) = $node->psql('postgres', "SET ROLE dana; SELECT orchestrator.http_fetch('file:///etc/passwd')");
like($err, qr/URL scheme "file" is not allowed/, 'file:// cannot even be defined');

# orchestrator.http_allowed_hosts
query($node, "ALTER SYSTEM SET orchestrator.http_allowed_hosts = '127.0.0.1'; SELECT pg_reload_conf()");
query($node, qq{
SELECT orchestrator.create_dag('hosts', params => '{"base": "$base", "port": "$port"}');
SELECT orchestrator.add_task('hosts', 'allowed', orchestrator.http_fetch('{{ params.base }}/files/edge.csv'));
SELECT orchestrator.add_task('hosts', 'other_host', orchestrator.http_fetch('http://localhost:{{ params.port }}/files/edge.csv'));
SELECT orchestrator.add_task('hosts', 'redirected', orchestrator.http_fetch('{{ params.base }}/redirect-to/http://localhost:{{ params.port }}/files/edge.csv'));
});
($run, $state) = run_dag('hosts');
%error = map { split /\|/, $_, 2 } split /\n/,
  query($node, "SELECT task_id || '|' || regexp_replace(coalesce(error, state), E'\\n.*', '', 's') FROM orchestrator.task_instances WHERE run_id = $run");
is($error{allowed}, 'success', 'an allowed host is reached');
like($error{other_host}, qr/^host "localhost" is not allowed/, 'another host is refused');
like($error{redirected}, qr/^redirect to "http:\/\/localhost:\d+\/files\/edge.csv" is not allowed/, 'and so is a redirect to it');
query($node, "ALTER SYSTEM RESET orchestrator.http_allowed_hosts; SELECT pg_reload_conf()");

# --- progress, and SIGKILL in the middle of a COPY
query($node, qq{
CREATE TABLE kc (id bigint, name text, amount float8);
SELECT orchestrator.create_dag('killcopy', params => '{"base": "$base"}');
SELECT orchestrator.add_task('killcopy', 'load', orchestrator.copy_into('kc', url => '{{ params.base }}/trickle/big.csv'),
                             retries => 1, retry_delay => '0');
});
$run = query($node, "SELECT orchestrator.trigger_dag('killcopy')");
wait_for($node, "SELECT rows_loaded > 0 AND bytes_read > 0 AND rows_per_second IS NOT NULL FROM orchestrator.progress WHERE run_id = $run",
	't', 'the progress view shows bytes read, rows loaded and rate while the COPY runs');
my $pid = query($node, "SELECT worker_pid FROM orchestrator.task_instance WHERE run_id = $run");
kill 'KILL', $pid;
$node->poll_query_until('postgres', 'SELECT 1', '1');
is(query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"), 'success', 'after SIGKILL mid-COPY the retry succeeds');
is(query($node, "SELECT count(*) || ' ' || count(DISTINCT id) FROM kc"), '200000 200000', 'and loads the exact row count');
is(query($node, "SELECT try_number || ' ' || rows_loaded FROM orchestrator.task_instances WHERE run_id = $run"), '2 200000',
	'on its second try');

# --- retention: purge_history removes runs with their artifacts
my $los = query($node, "SELECT count(*) FROM pg_largeobject_metadata");
cmp_ok($los, '>', 0, 'artifacts are large objects');
my $runs = query($node, "SELECT count(*) FROM orchestrator.dag_runs WHERE state IN ('success', 'failed')");
is(query($node, "SELECT orchestrator.purge_history('0 seconds')"), $runs, 'purge_history removes the ended runs');
is(query($node, "SELECT count(*) FROM pg_largeobject_metadata"), '0', 'and their artifacts');
is(query($node, "SELECT count(*) FROM orchestrator.task_instances"), '0', 'and their task instances');
is(query($node, "SELECT count(*) FROM orchestrator.dags"), '8', 'and keeps the definitions');

ok(!$node->log_contains('lost its worker \(pid (?!' . $pid . '\))'), 'no live worker was taken for lost');
ok(!$node->log_contains('leak'), 'no resource leak warnings');
$node->stop;
done_testing();
