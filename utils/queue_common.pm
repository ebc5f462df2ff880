# utils/queue_common.pm: what utils/run.pl and utils/slurm.pl share, so that
# both read the same command line (Kaldi's `CMD [options] [JOB=1:N] LOG COMMAND...`),
# build the same shell command from it and report failures the same way.
package queue_common;

use strict;
use warnings;
use Exporter 'import';
use POSIX qw(strftime);

our @EXPORT_OK = qw(parse_command_line command_string shell_quote substitute_job
  failure_message timestamp usage_error);

# Bare arguments that stay shell syntax, so Kaldi-style `cmd a \| cmd b` and
# `cmd '>' out` still build a pipeline or a redirection.
my %SHELL_OPERATORS = map { $_ => 1 } ('|', '||', '&&', ';', '&', '<', '>', '>>', '2>', '2>>',
  '&>', '2>&1', '>&2', '|&', '(', ')');

# Quote one argument for bash; plain words are left alone to keep logs readable.
sub shell_quote {
  my ($arg) = @_;
  return "''" if $arg eq '';
  return $arg if $arg =~ m{^[A-Za-z0-9_./,:=+\@%^-]+$};
  (my $quoted = $arg) =~ s/'/'\\''/g;
  return "'$quoted'";
}

# The bash command line for the COMMAND arguments. One argument is taken as a
# whole shell command (`run.pl log "a | b"`); several are quoted one by one,
# except bare shell operators.
sub command_string {
  my @args = @_;
  return $args[0] if @args == 1;
  return join ' ', map { $SHELL_OPERATORS{$_} ? $_ : shell_quote($_) } @args;
}

# Replace every occurrence of the job variable's name (e.g. JOB) by the index.
sub substitute_job {
  my ($text, $name, $index) = @_;
  return $text unless defined $name;
  $text =~ s/\Q$name\E/$index/g;
  return $text;
}

sub usage_error {
  my ($prog, $message) = @_;
  print STDERR "$prog: $message\n";
  print STDERR "usage: $prog [options] [JOB=1:N] LOGFILE COMMAND...\n";
  exit 1;
}

# Parse @$argv. Options `--name value` or `--name=value` and the job range
# NAME=a:b (or NAME=a) come first, in any order (names in %$flags take no
# value). Returns a hash: options => [[name, value], ...] with dashes in names
# turned into underscores, in command-line order, without max_jobs_run;
# max_jobs_run (undef if not given); job_name (undef for a single job); first,
# last; log; command => [args].
sub parse_command_line {
  my ($prog, $argv, $flags) = @_;
  $flags //= {};
  my @args = @$argv;
  my (@options, $max_jobs_run);
  my ($job_name, $first, $last) = (undef, 1, 1);
  # Kaldi allows the job range before, after or between the options.
  while (@args) {
    if (!defined $job_name && $args[0] =~ /^([A-Za-z][A-Za-z0-9_]*)=([0-9]+)(?::([0-9]+))?$/) {
      ($job_name, $first, $last) = ($1, $2, $3 // $2);
      shift @args;
      usage_error($prog, "empty job range $job_name=$first:$last") if $first > $last;
      next;
    }
    last unless $args[0] =~ /^--./;
    my $arg = shift @args;
    my ($name, $value);
    if ($arg =~ /^--([^=]+)=(.*)$/s) {
      ($name, $value) = ($1, $2);
    } else {
      $name = substr($arg, 2);
      if ($flags->{$name}) {
        $value = 1;
      } else {
        usage_error($prog, "option $arg needs a value") unless @args;
        $value = shift @args;
      }
    }
    $name =~ tr/-/_/;
    if ($name eq 'max_jobs_run') {
      usage_error($prog, "--max-jobs-run needs a positive integer, not '$value'")
        unless $value =~ /^[1-9][0-9]*$/;
      $max_jobs_run = $value;
    } else {
      push @options, [$name, $value];
    }
  }
  usage_error($prog, "missing LOGFILE and COMMAND") unless @args >= 2;
  my $log = shift @args;
  if (defined $job_name && $last > $first && index($log, $job_name) < 0) {
    my $count = $last - $first + 1;
    usage_error($prog, "$count jobs would share one log file $log; put $job_name in its name");
  }
  return {
    options => \@options,
    max_jobs_run => $max_jobs_run,
    job_name => $job_name,
    first => $first,
    last => $last,
    log => $log,
    command => \@args,
  };
}

# The line printed when jobs failed, naming the log of every failed job.
sub failure_message {
  my ($prog, $total, @failed_logs) = @_;
  my $count = @failed_logs;
  my $where = $count == 1 ? "log is in" : "logs are in";
  return "$prog: $count / $total failed, $where @failed_logs\n";
}

# The time in the format of date(1), as Kaldi's logs show it.
sub timestamp {
  return strftime('%a %b %e %H:%M:%S %Z %Y', localtime);
}

1;
