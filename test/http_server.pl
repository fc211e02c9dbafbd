#!/usr/bin/env perl
# A local HTTP server for the tests and the demo: serves the files of a
# directory, and misbehaves on request.  Core Perl only; one process per
# connection; listens on 127.0.0.1 only.
#
#   http_server.pl --root DIR [--port N] [--port-file FILE]
#
# Paths (NAME is a file under DIR):
#   /files/NAME, /NAME       the file, with Content-Length (on /files/, with an
#                            ETag and Last-Modified, and 304 to If-None-Match)
#   /chunked/NAME            the file, with Transfer-Encoding: chunked
#   /trickle/NAME            the file, 64 kB at a time with a pause between
#   /slow/SECONDS/NAME       waits, then sends the file
#   /short/NAME              announces the file's length, sends half, closes
#   /reset/NAME              chunked, sends half, closes without the last chunk
#   /status/CODE             that status, with a short body
#   /flaky/KEY/N/NAME        503 for the first N requests of KEY, then the file
#   /redirect/N/NAME         N redirects, then the file
#   /redirect-to/URL         one redirect to URL (the rest of the path)
#   /redirect-code/CODE/URL  one redirect to URL with status CODE, and a body
#                            that is not the file's
#   /redirect-padded/URL     302 with a Location of 2,100 spaces then URL,
#                            and a body that is not the file's
#   /slow-redirect/SECONDS/URL  waits, then one redirect to URL
#   /loop                    redirects to itself for ever
#   /echo                    the request (method, headers, body) as the body
#   /hook/NAME               appends the request's method and body to DIR/hook-NAME.log
#   /count/PREFIX            how many requests so far had a path starting PREFIX
# Every request is appended to DIR/requests.log.
use strict;
use warnings;
use Fcntl qw(:flock SEEK_END);
use Getopt::Long;
use IO::Socket::INET;
use POSIX ();

my ($root, $port, $port_file) = (undef, 0, undef);
GetOptions('root=s' => \$root, 'port=i' => \$port, 'port-file=s' => \$port_file)
  or die "usage: $0 --root DIR [--port N] [--port-file FILE]\n";
die "--root is required\n" unless defined $root && -d $root;

my $server = IO::Socket::INET->new(
	LocalAddr => '127.0.0.1',
	LocalPort => $port,
	Proto => 'tcp',
	Listen => 64,
	ReuseAddr => 1) or die "cannot listen: $!\n";
$port = $server->sockport;
if ($port_file)
{
	open my $fh, '>', "$port_file.tmp" or die;
	print $fh "$port\n";
	close $fh;
	rename "$port_file.tmp", $port_file or die;
}
$SIG{CHLD} = 'IGNORE';
$SIG{TERM} = sub { exit 0 };

while (my $client = $server->accept)
{
	my $pid = fork;
	if (!defined $pid) { close $client; next; }
	if ($pid == 0)
	{
		close $server;
		eval { handle($client) };
		close $client;
		POSIX::_exit(0);
	}
	close $client;
}

sub log_request
{
	my ($line) = @_;
	open my $fh, '>>', "$root/requests.log" or return;
	flock $fh, LOCK_EX;
	seek $fh, 0, SEEK_END;
	print $fh "$line\n";
	close $fh;
}

sub count_requests
{
	my ($prefix) = @_;
	open my $fh, '<', "$root/requests.log" or return 0;
	flock $fh, LOCK_SH;
	my $n = grep { (split / /)[1] =~ /^\Q$prefix\E/ } <$fh>;
	close $fh;
	return $n;
}

sub file_of
{
	my ($name) = @_;
	return undef if $name =~ /\.\./;
	my $path = "$root/$name";
	return -f $path ? $path : undef;
}

sub slurp
{
	my ($path) = @_;
	open my $fh, '<:raw', $path or die;
	local $/;
	my $data = <$fh>;
	close $fh;
	return $data;
}

sub respond
{
	my ($c, $status, $body, %headers) = @_;
	my $reason = { 200 => 'OK', 302 => 'Found', 304 => 'Not Modified', 404 => 'Not Found', 500 => 'Internal Server Error',
		503 => 'Service Unavailable' }->{$status} // 'Status';
	$headers{'Content-Length'} //= length($body);
	$headers{'Content-Type'} //= 'text/plain';
	print $c "HTTP/1.1 $status $reason\r\n";
	print $c "$_: $headers{$_}\r\n" for sort keys %headers;
	print $c "Connection: close\r\n\r\n";
	print $c $body;
}

sub content_type
{
	my ($name) = @_;
	return $name =~ /\.gz$/ ? 'application/gzip' : $name =~ /\.csv$/ ? 'text/csv' : 'application/octet-stream';
}

sub handle
{
	my ($c) = @_;
	binmode $c;
	$c->autoflush(1);
	my $request = <$c>;
	return unless defined $request;
	$request =~ s/\r?\n$//;
	my ($method, $path) = split / /, $request;
	my %headers;
	my $raw_headers = '';
	while (my $line = <$c>)
	{
		last if $line =~ /^\r?\n$/;
		$raw_headers .= $line;
		$headers{ lc $1 } = $2 if $line =~ /^([^:]+):\s*(.*?)\r?\n$/;
	}
	my $body = '';
	read($c, $body, $headers{'content-length'}) if $headers{'content-length'};
	log_request("$method $path");
	my $host = "127.0.0.1:$port";

	if ($path =~ m{^/files/(.+)$} and my $f = file_of($1))
	{
		my @st = stat $f;
		my $etag = sprintf('"%x-%x"', $st[7], $st[9]);
		my $modified = POSIX::strftime('%a, %d %b %Y %H:%M:%S GMT', gmtime $st[9]);
		if (($headers{'if-none-match'} // '') eq $etag)
		{
			log_request("NOT-MODIFIED $path");
			respond($c, 304, '', ETag => $etag, 'Last-Modified' => $modified, 'Content-Length' => 0);
		}
		else
		{
			respond($c, 200, $method eq 'HEAD' ? '' : slurp($f), 'Content-Type' => content_type($1),
				'Content-Length' => -s $f, ETag => $etag, 'Last-Modified' => $modified);
		}
	}
	elsif ($path =~ m{^/chunked/(.+)$} and my $f2 = file_of($1))
	{
		my $data = slurp($f2);
		print $c "HTTP/1.1 200 OK\r\nContent-Type: " . content_type($1)
		  . "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
		for (my $i = 0; $i < length $data; $i += 1000)
		{
			my $chunk = substr($data, $i, 1000);
			printf $c "%x\r\n%s\r\n", length $chunk, $chunk;
		}
		print $c "0\r\n\r\n";
	}
	elsif ($path =~ m{^/trickle/(.+)$} and my $f3 = file_of($1))
	{
		my $data = slurp($f3);
		print $c "HTTP/1.1 200 OK\r\nContent-Type: " . content_type($1)
		  . "\r\nContent-Length: " . length($data) . "\r\nConnection: close\r\n\r\n";
		for (my $i = 0; $i < length $data; $i += 65536)
		{
			print $c substr($data, $i, 65536);
			select(undef, undef, undef, 0.05);
		}
	}
	elsif ($path =~ m{^/slow/(\d+(?:\.\d+)?)/(.+)$} and my $f4 = file_of($2))
	{
		select(undef, undef, undef, $1);
		respond($c, 200, slurp($f4), 'Content-Type' => content_type($2));
	}
	elsif ($path =~ m{^/short/(.+)$} and my $f5 = file_of($1))
	{
		my $data = slurp($f5);
		print $c "HTTP/1.1 200 OK\r\nContent-Length: " . length($data) . "\r\nConnection: close\r\n\r\n";
		print $c substr($data, 0, int(length($data) / 2));
	}
	elsif ($path =~ m{^/reset/(.+)$} and my $f6 = file_of($1))
	{
		my $data = slurp($f6);
		print $c "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
		my $half = substr($data, 0, int(length($data) / 2));
		printf $c "%x\r\n%s\r\n", length $half, $half;
	}
	elsif ($path =~ m{^/status/(\d+)$})
	{
		respond($c, $1, "status $1\n");
	}
	elsif ($path =~ m{^/flaky/([^/]+)/(\d+)/(.+)$} and my $f7 = file_of($3))
	{
		if (count_requests("/flaky/$1/") <= $2) { respond($c, 503, "try again\n"); }
		else { respond($c, 200, slurp($f7), 'Content-Type' => content_type($3)); }
	}
	elsif ($path =~ m{^/redirect/(\d+)/(.+)$})
	{
		my $next = $1 > 0 ? '/redirect/' . ($1 - 1) . "/$2" : "/files/$2";
		respond($c, 302, '', Location => $next);
	}
	elsif ($path =~ m{^/redirect-to/(.+)$})
	{
		respond($c, 302, '', Location => $1);
	}
	elsif ($path =~ m{^/redirect-code/(3\d\d)/(.+)$})
	{
		respond($c, $1, "3,redirect body,0\n", Location => $2);
	}
	elsif ($path =~ m{^/slow-redirect/(\d+(?:\.\d+)?)/(.+)$})
	{
		select(undef, undef, undef, $1);
		respond($c, 302, '', Location => $2);
	}
	elsif ($path =~ m{^/redirect-padded/(.+)$})
	{
		respond($c, 302, "3,redirect body,0\n", Location => (' ' x 2100) . $1);
	}
	elsif ($path eq '/loop')
	{
		respond($c, 302, '', Location => "http://$host/loop");
	}
	elsif ($path =~ m{^/hook/([\w.-]+)$})
	{
		open my $fh, '>>', "$root/hook-$1.log" or die;
		flock $fh, LOCK_EX;
		print $fh "$method $headers{'content-type'} $body\n";
		close $fh;
		respond($c, 200, "ok\n");
	}
	elsif ($path eq '/echo')
	{
		respond($c, 200, "$method\n$raw_headers\n$body", 'Content-Type' => 'text/plain');
	}
	elsif ($path =~ m{^/count(/.*)$})
	{
		respond($c, 200, count_requests($1) . "\n");
	}
	elsif ($path =~ m{^/([^/]+)$} and my $f8 = file_of($1))
	{
		respond($c, 200, $method eq 'HEAD' ? '' : slurp($f8), 'Content-Type' => content_type($1),
			'Content-Length' => -s $f8);
	}
	else
	{
		respond($c, 404, "not found: $path\n");
	}
}
