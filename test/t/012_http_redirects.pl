# Redirects: every hop is checked, scheme and host, against the URL libcurl
# will fetch (a Location of any length, relative or absolute); the body of
# a redirect never reaches the data; at most 10 hops; the method, body and
# credentials follow the rules browsers and libcurl follow.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use OrchTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = orch_node('redirects');
my $www = PostgreSQL::Test::Utils::tempdir;
sub write_file { my ($name, $data) = @_; open my $fh, '>:raw', "$www/$name" or die; print $fh $data; close $fh; }
sub requests { open my $fh, '<', "$www/requests.log" or return ''; local $/; return <$fh>; }

my $small = "id,name,amount\n1,one,1.5\n2,two,2.5\n";
write_file('small.csv', $small);
# reachable only through a host that is not allowed
write_file('secret.csv', "id,name,amount\n666,secret,0\n");

my $port = start_http_server($www);
my $base = "http://127.0.0.1:$port";
my $local = "http://localhost:$port";

sub run_dag
{
	my ($dag) = @_;
	my $run = query($node, "SELECT orchestrator.trigger_dag('$dag')");
	return ($run, query($node, "SELECT orchestrator.wait_run($run, '3 minutes')"));
}

sub errors
{
	my ($run) = @_;
	return map { split /\|/, $_, 2 } split /\n(?=\w+\|)/,
	  query($node, "SELECT task_id || '|' || coalesce(error, state) FROM orchestrator.task_instances WHERE run_id = $run");
}

sub artifact
{
	my ($run, $task) = @_;
	return query($node, "SELECT convert_from(lo_get(loid), 'UTF8') FROM orchestrator.artifacts WHERE run_id = $run AND task_id = '$task'");
}

query($node, q{
CREATE TABLE t (id bigint, name text, amount float8);
INSERT INTO t VALUES (0, 'kept', 0);
ALTER SYSTEM SET orchestrator.http_allowed_hosts = '127.0.0.1';
SELECT pg_reload_conf();
});

# --- with only 127.0.0.1 allowed
query($node, qq{
SELECT orchestrator.create_dag('hops', params => '{"base": "$base", "local": "$local", "port": "$port"}');
SELECT orchestrator.add_task('hops', 'padded_local', orchestrator.copy_into('t', url => '{{ params.base }}/redirect-padded/{{ params.local }}/files/secret.csv'));
SELECT orchestrator.add_task('hops', 'padded_allowed', orchestrator.copy_into('padded_t', url => '{{ params.base }}/redirect-padded/{{ params.base }}/files/small.csv', create_table => true));
SELECT orchestrator.add_task('hops', 'file_scheme', orchestrator.copy_into('t', url => '{{ params.base }}/redirect-to/file:///etc/passwd', format => 'text'));
SELECT orchestrator.add_task('hops', 'ftp_scheme', orchestrator.http_fetch('{{ params.base }}/redirect-to/ftp://127.0.0.1:{{ params.port }}/small.csv'));
SELECT orchestrator.add_task('hops', 'ten_hops', orchestrator.copy_into('hops_t', url => '{{ params.base }}/redirect/9/small.csv', create_table => true));
SELECT orchestrator.add_task('hops', 'eleven_hops', orchestrator.copy_into('t', url => '{{ params.base }}/redirect/10/small.csv'));
SELECT orchestrator.add_task('hops', 'absolute', orchestrator.http_fetch('{{ params.base }}/redirect-code/301/{{ params.base }}/redirect-code/308/{{ params.base }}/files/small.csv'));
});
my ($run, $state) = run_dag('hops');
is($state, 'failed', 'a run with refused redirects fails');
my %error = errors($run);

like($error{padded_local}, qr/^redirect to "http:\/\/localhost:$port\/files\/secret.csv" is not allowed\nDETAIL:  orchestrator.http_allowed_hosts is "127.0.0.1"/,
	'a Location padded with 2,100 spaces is checked: the host libcurl would reach is not allowed');
is(query($node, "SELECT string_agg(id || ' ' || name, ',') FROM t"), '0 kept', 'the target table is unchanged');
unlike(requests(), qr{^\w+ /files/secret.csv$}m, 'and the URL it pointed to was never requested');

is($error{padded_allowed}, 'success', 'a padded Location to an allowed host is followed');
is(query($node, "SELECT string_agg(id || ' ' || name || ' ' || amount, ',' ORDER BY id) FROM padded_t"), '1 one 1.5,2 two 2.5',
	'and only the final body is loaded, not the redirect\'s');

like($error{file_scheme}, qr/^redirect to "file:\/\/\/etc\/passwd" is not allowed\nDETAIL:  Only http and https URLs can be fetched/,
	'a redirect to file:// is refused');
like($error{ftp_scheme}, qr/^redirect to "ftp:\/\/127.0.0.1:$port\/small.csv" is not allowed\nDETAIL:  Only http and https URLs can be fetched/,
	'a redirect to ftp:// is refused, even to an allowed host');
unlike(requests(), qr{^\w+ /small.csv$}m, 'and nothing was fetched in its place');

is($error{ten_hops}, 'success', '10 redirects, relative Locations, within the allowed hosts: followed');
is(query($node, "SELECT count(*) FROM hops_t"), '2', 'and the file loaded once');
like($error{eleven_hops}, qr/^more than 10 redirects fetching \Q$base\E\/redirect\/10\/small.csv/, '11 redirects: too many');
is($error{absolute}, 'success', '301 and 308 with absolute Locations are followed');
is(artifact($run, 'absolute'), $small, 'the artifact is the final body only');
is(query($node, "SELECT url FROM orchestrator.artifacts WHERE run_id = $run AND task_id = 'absolute'"),
	"$base/redirect-code/301/$base/redirect-code/308/$base/files/small.csv", 'and records the URL asked for');
is(query($node, "SELECT string_agg(id || ' ' || name, ',') FROM t"), '0 kept', 'after every failure the target table is unchanged');

# --- methods, bodies and credentials across redirects (any host allowed)
query($node, "ALTER SYSTEM RESET orchestrator.http_allowed_hosts; SELECT pg_reload_conf()");
query($node, qq{
SELECT orchestrator.create_dag('methods', params => '{"base": "$base", "local": "$local"}');
SELECT orchestrator.add_task('methods', 'post_302', orchestrator.http_fetch('{{ params.base }}/redirect-code/302/{{ params.base }}/echo', method => 'POST', body => 'a=1'));
SELECT orchestrator.add_task('methods', 'post_303', orchestrator.http_fetch('{{ params.base }}/redirect-code/303/{{ params.base }}/echo', method => 'POST', body => 'a=1'));
SELECT orchestrator.add_task('methods', 'post_307', orchestrator.http_fetch('{{ params.base }}/redirect-code/307/{{ params.base }}/echo', method => 'POST', body => 'a=1'));
SELECT orchestrator.add_task('methods', 'put_308', orchestrator.http_fetch('{{ params.base }}/redirect-code/308/{{ params.base }}/echo', method => 'PUT', body => 'b=2'));
SELECT orchestrator.add_task('methods', 'same_host', orchestrator.http_fetch('{{ params.base }}/redirect-to/{{ params.base }}/echo',
	headers => '{"Authorization": "Bearer s3cret", "Cookie": "c=1", "X-Other": "kept"}'));
SELECT orchestrator.add_task('methods', 'other_host', orchestrator.http_fetch('{{ params.base }}/redirect-to/{{ params.local }}/echo',
	headers => '{"Authorization": "Bearer s3cret", "Cookie": "c=1", "X-Other": "kept"}'));
SELECT orchestrator.add_task('methods', 'no_location', orchestrator.http_fetch('{{ params.base }}/status/302'));
-- each hop is quicker than the timeout, all of them together are not
SELECT orchestrator.add_task('methods', 'slow_hops', orchestrator.http_fetch(
	'{{ params.base }}/slow-redirect/0.8/{{ params.base }}/slow-redirect/0.8/{{ params.base }}/files/small.csv', timeout => '1.2 seconds'));
});
($run, $state) = run_dag('methods');
%error = errors($run);
like(artifact($run, 'post_302'), qr/^GET\n(?!.*a=1)/s, 'POST, then 302: GET without the body, as libcurl and browsers do');
like(artifact($run, 'post_303'), qr/^GET\n(?!.*a=1)/s, 'POST, then 303: GET');
like(artifact($run, 'post_307'), qr/^POST\n.*\n\na=1$/s, 'POST, then 307: POST again, with the body');
like(artifact($run, 'put_308'), qr/^PUT\n.*\n\nb=2$/s, 'PUT, then 308: PUT again, with the body');
my $same = artifact($run, 'same_host');
like($same, qr/^Authorization: Bearer s3cret\r?$/m, 'a redirect to the same host keeps the Authorization header');
like($same, qr/^Cookie: c=1\r?$/m, 'and the Cookie header');
my $other = artifact($run, 'other_host');
like($other, qr/^X-Other: kept\r?$/m, 'a redirect to another host keeps other headers');
unlike($other, qr/Authorization|s3cret/i, 'but never sends the Authorization header there');
unlike($other, qr/^Cookie/mi, 'nor the Cookie header');
like($error{no_location}, qr/^HTTP status 302 from \Q$base\E\/status\/302/, 'a redirect status without a Location is an error');
like($error{slow_hops}, qr/^timed out fetching \Q$base\E\/slow-redirect\/0.8\//, 'the timeout covers all the hops together');
unlike(join('', map { artifact($run, $_) } qw(post_302 post_303 post_307 put_308 same_host other_host)), qr/redirect body/,
	'no redirect body reaches an artifact');

$node->stop;
done_testing();
