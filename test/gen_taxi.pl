#!/usr/bin/env perl
# Deterministic NYC yellow-taxi trip data, with the real files' 18 columns:
#
#   gen_taxi.pl --month 2021-01 [--rows N] [--seed S] [--bad N] [--colour green] > yellow_tripdata_2021-01.csv
#
# Rows default to the real file's count for the month (January 2021:
# 1,369,765).  Values are realistic (pickup times within the month, trip
# times and distances, fares that add up), and about 1 row in 14 has empty
# VendorID, passenger_count, RatecodeID, store_and_fwd_flag and
# payment_type, as in the real data.  The same arguments always give the
# same bytes: the generator uses its own random numbers.
#
# --bad N adds N rows that do not fit, spread evenly through the file, in
# turn: a line cut short, a passenger count that is not a number, a pickup
# in 2009 and one in the next month (both outside the month), and a row
# without a pickup time.  The other rows are those the same arguments give
# without --bad.
#
# --colour green gives green-taxi trips: the columns' times are named
# lpep_ (the real green files' prefix) instead of tpep_, and the numbers
# differ from yellow's (they are drawn from another seed).  The real green
# files also have ehail_fee and trip_type, and order the columns otherwise;
# one table per colour loads either.
use strict;
use warnings;
use integer;
use Getopt::Long;

my %real_rows = ('2021-01' => 1369765, '2021-02' => 1371709, '2021-03' => 1925152);
my ($month, $rows, $seed, $bad, $colour) = ('2021-01', undef, 1, 0, 'yellow');
GetOptions('month=s' => \$month, 'rows=i' => \$rows, 'seed=i' => \$seed, 'bad=i' => \$bad,
	'colour=s' => \$colour)
  or die "usage: $0 --month YYYY-MM [--rows N] [--seed S] [--bad N] [--colour yellow|green]\n";
die "--colour must be yellow or green\n" unless $colour eq 'yellow' || $colour eq 'green';
$seed += 1000 if $colour eq 'green';
my $prefix = $colour eq 'green' ? 'lpep' : 'tpep';
die "--month must be YYYY-MM\n" unless $month =~ /^(\d{4})-(\d{2})$/;
my ($year, $mon) = ($1, $2);
$rows //= $real_rows{$month} // 1_000_000;

# a 31-bit linear congruential generator: the same numbers everywhere
my $state = ($seed * 7919 + $year * 12 + $mon) & 0x7fffffff;
sub rnd { my ($n) = @_; $state = ($state * 1103515245 + 12345) & 0x7fffffff; return ($state >> 8) % $n; }

my @mdays = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31);
my $days = $mdays[$mon - 1] + ($mon == 2 && $year % 4 == 0 ? 1 : 0);
my $seconds = $days * 86400;

sub stamp
{
	my ($t) = @_;
	my $d = $t / 86400;
	my $s = $t % 86400;
	if ($d >= $days)
	{
		# past the month's end: the next day of the next month
		my ($y, $m) = $mon == 12 ? ($year + 1, 1) : ($year, $mon + 1);
		return sprintf('%04d-%02d-%02d %02d:%02d:%02d', $y, $m, $d - $days + 1, $s / 3600, $s % 3600 / 60, $s % 60);
	}
	return sprintf('%04d-%02d-%02d %02d:%02d:%02d', $year, $mon, $d + 1, $s / 3600, $s % 3600 / 60, $s % 60);
}

sub money { my ($cents) = @_; return sprintf('%s%d.%02d', $cents < 0 ? '-' : '', abs($cents) / 100, abs($cents) % 100); }

print "VendorID,${prefix}_pickup_datetime,${prefix}_dropoff_datetime,passenger_count,trip_distance,RatecodeID,store_and_fwd_flag,PULocationID,DOLocationID,payment_type,fare_amount,extra,mta_tax,tip_amount,tolls_amount,improvement_surcharge,total_amount,congestion_surcharge\n";
# the bad rows, after every ($rows / ($bad + 1))th row
my ($nm_year, $nm_mon) = $mon == 12 ? ($year + 1, 1) : ($year, $mon + 1);
my @bad_rows = (
	sub { "2,$year-$mon-03 10:00:00,$year-$mon-03 10:12:00,1" },
	sub { "1,$year-$mon-04 11:00:00,$year-$mon-04 11:09:00,two,1.20,1,N,142,236,1,7.50,0.50,0.5,1.00,0.00,0.3,12.30,2.50" },
	sub { "2,2009-$mon-05 12:00:00,2009-$mon-05 12:20:00,1,3.10,1,N,48,68,2,13.00,0.50,0.5,0.00,0.00,0.3,16.80,2.50" },
	sub { sprintf('1,%04d-%02d-01 00:30:00,%04d-%02d-01 00:41:00,1,2.00,1,N,230,161,1,9.00,0.50,0.5,2.00,0.00,0.3,14.80,2.50', $nm_year, $nm_mon, $nm_year, $nm_mon) },
	sub { ",,,,0.90,,,264,264,,5.00,0.50,0.5,0.00,0.00,0.3,6.30,0.00" });
my $bad_every = $bad > 0 ? int($rows / ($bad + 1)) || 1 : 0;
my $bad_done = 0;
my $buf = '';
for my $i (1 .. $rows)
{
	# pickups spread over the month, in order
	my $pickup = ($i - 1) * ($seconds / $rows) + rnd($seconds / $rows + 1);
	my $minutes = 2 + rnd(25) + (rnd(10) == 0 ? rnd(60) : 0);
	my $dropoff = $pickup + $minutes * 60 + rnd(60);
	my $dist = 30 + rnd(350) + (rnd(8) == 0 ? rnd(1500) : 0);    # hundredths of a mile
	my $missing = rnd(14) == 0;
	my $fare = 250 + $dist * 250 / 100 + $minutes * 30;
	$fare = -$fare if rnd(500) == 0;    # refunds
	my $extra = (0, 50, 100, 250, 300)[rnd(5)];
	my $tip = rnd(3) == 0 ? 0 : $fare * (10 + rnd(15)) / 100;
	my $tolls = rnd(25) == 0 ? 655 : 0;
	my $congestion = rnd(5) == 0 ? 0 : 250;
	my $total = $fare + $extra + 50 + $tip + $tolls + 30 + $congestion;
	$buf .= join(',',
		$missing ? '' : 1 + rnd(2),
		stamp($pickup), stamp($dropoff),
		$missing ? '' : 1 + (rnd(4) == 0 ? rnd(6) : 0),
		sprintf('%d.%02d', $dist / 100, $dist % 100),
		$missing ? '' : (rnd(100) == 0 ? 2 + rnd(4) : 1),
		$missing ? '' : (rnd(50) == 0 ? 'Y' : 'N'),
		1 + rnd(265), 1 + rnd(265),
		$missing ? '' : 1 + (rnd(3) == 0 ? 1 : 0),
		money($fare), money($extra), '0.5', money($tip), money($tolls), '0.3',
		money($total), money($congestion)) . "\n";
	if ($bad_every && $i % $bad_every == 0 && $bad_done < $bad)
	{
		$buf .= $bad_rows[$bad_done % @bad_rows]->() . "\n";
		$bad_done++;
	}
	if (length $buf > 65536) { print $buf; $buf = ''; }
}
$buf .= $bad_rows[$bad_done++ % @bad_rows]->() . "\n" while $bad_done < $bad;
print $buf;
