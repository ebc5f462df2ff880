#!/usr/bin/env perl
# utils/slurm.pl: run a command, or an array of jobs, as ONE Slurm array job and
# wait for it; the interface of utils/run.pl (Kaldi's run.pl/queue.pl):
#
#   utils/slurm.pl [options] [JOB=1:N] LOGFILE COMMAND...
#   utils/slurm.pl --mem 8G --gpu 1 JOB=1:4 exp/log/infer.JOB.log tsekit infer --job JOB --nj 4
#
# It writes a batch script LOGDIR/q/BASE.sh (BASE: the log name without the job
# variable and extension, e.g. "infer") and runs
#   sbatch OPTIONS --array=FIRST-LAST[%K] --job-name=BASE --output=LOGDIR/q/BASE.%a.out LOGDIR/q/BASE.sh
# Task i of the array runs the command with the job variable replaced by i,
# from the directory slurm.pl was started in, with ./path.sh sourced first when
# it exists (as Kaldi does), and writes LOGFILE (job variable replaced by i)
# with the same header and footer as utils/run.pl, then a "done" marker file
# holding its exit code. slurm.pl polls those markers; now and then (every
# SLURM_PL_POLL seconds, default 10, backing off to 3x that) it asks squeue
# which tasks are still queued or running, so that a task that died without a
# marker (time limit, out of memory, node failure) is reported instead of
# waited for, and a job the cluster will never start (pending, at two looks,
# for a reason such as PartitionConfig: it asks for more CPUs, memory, nodes or
# time than its partition has) is cancelled and reported. Exit status 0 when
# every task succeeded, otherwise 1 with "slurm.pl: F / N failed, log is in
# LOG..." on stderr. SIGINT/SIGTERM/SIGHUP cancel the job (scancel JOBID) and
# exit with 128 + the signal number.
#
# Options:
#   --max-jobs-run K     at most K tasks at once (--array=...%K)
#   --config FILE        sbatch options (format below); default conf/slurm.conf
#                        when it exists, else the built-in config below
#   --dry-run            (or env SLURM_PL_DRY_RUN=1) write the batch script, print
#                        the sbatch command line and the script's path, submit nothing
#   --NAME VALUE         any option the config defines, e.g. --mem 4G --num-threads 2
#                        --gpu 1 --time 4:00:00; an option it does not define is an error
#
# Config format (Kaldi's conf/queue.conf and slurm.conf):
#   command sbatch --export=PATH     the submit command and options always given
#   option NAME=* ARGS...            for --NAME VALUE: ARGS with $0 replaced by VALUE
#   option NAME=VALUE ARGS...        for exactly that VALUE (no ARGS: add nothing)
#   default NAME=VALUE               as if --NAME VALUE were given when it is not
# Names may be written with - or _ (--num-threads is num_threads). sbatch gets
# the command's options, then those of the command-line options in their order,
# then those of the defaults, then --array, --job-name and --output.
#
# The built-in config maps --mem X to --mem=X, memory for the whole task (Kaldi
# uses --mem-per-cpu; per task is what people mean by "this job needs 8G"
# whatever --num-threads is), --mem 0 to nothing (no limit asked), --num-threads N
# to --cpus-per-task=N, --gpu 0 to nothing, --gpu N to --gres=gpu:N, --time T to
# --time=T. It names no partition: jobs go to the cluster's default one.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use Cwd qw(getcwd);
use File::Basename qw(basename dirname);
use File::Path qw(make_path);
use Time::HiRes qw(time);
use queue_common qw(parse_command_line command_string shell_quote substitute_job failure_message);

my $PROG = 'slurm.pl';
my %SIGNAL_NUMBER = (HUP => 1, INT => 2, TERM => 15);
# squeue reasons a job keeps until someone changes the cluster or the request:
# with EnforcePartLimits=NO a job the partition cannot hold stays queued forever
my %NEVER_STARTS = (
  PartitionConfig => 'its request exceeds what the partition has (CPUs per task, memory, GPUs)',
  PartitionNodeLimit => "it needs more nodes than the partition allows",
  PartitionTimeLimit => "its time limit exceeds the partition's",
  BadConstraints => 'no node satisfies its constraints',
);
my $BUILTIN_CONFIG = <<'END';
command sbatch --export=ALL
option mem=* --mem=$0
option mem=0
option num_threads=* --cpus-per-task=$0
option gpu=* --gres=gpu:$0
option gpu=0
option time=* --time=$0
END

$| = 1;
my $caught;    # name of the signal that stops us
for my $signal (keys %SIGNAL_NUMBER) {
  $SIG{$signal} = sub { $caught //= $signal };
}

my $job = parse_command_line($PROG, \@ARGV, {'dry-run' => 1});
my ($config_file, $dry_run, @resource_options) = (undef, $ENV{SLURM_PL_DRY_RUN}, ());
for my $option (@{$job->{options}}) {
  my ($name, $value) = @$option;
  if ($name eq 'config') {
    $config_file = $value;
  } elsif ($name eq 'dry_run') {
    $dry_run = 1;
  } else {
    push @resource_options, $option;
  }
}
if (defined $config_file) {
  fail("$PROG: config file $config_file not found\n") unless -f $config_file;
} elsif (-f 'conf/slurm.conf') {
  $config_file = 'conf/slurm.conf';
}
my $config = read_config($config_file);
my ($sbatch_command, @sbatch_options) = sbatch_arguments($config, \@resource_options);
my %given = map { $_->[0] => $_->[1] } @resource_options;
my $threads = $given{num_threads} // $config->{defaults}{num_threads} // 1;

my $log = $job->{log};
my $queue_dir = dirname($log) . '/q';
my $base = basename($log);
$base =~ s/\.?\Q$job->{job_name}\E//g if defined $job->{job_name};
$base =~ s/\.[A-Za-z0-9]{1,5}$//;
$base = 'job' if $base eq '' || $base =~ /^\./;
my $script = "$queue_dir/$base.sh";
my $marker_prefix = "$queue_dir/$base.done.$$.";
my $array = "$job->{first}-$job->{last}" . (defined $job->{max_jobs_run} ? "%$job->{max_jobs_run}" : '');
my @sbatch = ($sbatch_command, @sbatch_options, "--array=$array", "--job-name=$base",
  "--output=$queue_dir/$base.%a.out", $script);

make_path($queue_dir) unless -d $queue_dir;
write_batch_script();
if ($dry_run) {
  print join(' ', map { shell_quote($_) } @sbatch), "\n";
  print "batch script: $script\n";
  exit 0;
}
remove_markers();
my $job_id = submit();
exit wait_for_tasks();

# Parse a config (Kaldi's format, see the top of this file) from FILE, or the
# built-in one when FILE is undef.
sub read_config {
  my ($file) = @_;
  my ($text, $where) = ($BUILTIN_CONFIG, 'the built-in config');
  if (defined $file) {
    open my $fh, '<', $file or fail("$PROG: cannot read config file $file: $!\n");
    local $/;
    $text = <$fh>;
    $where = $file;
  }
  my %config = (command => undef, exact => {}, any => {}, defaults => {}, default_order => []);
  my $line_number = 0;
  for my $line (split /\n/, $text) {
    $line_number++;
    $line =~ s/#.*//;
    my @words = split ' ', $line;
    next unless @words;
    my $kind = shift @words;
    if ($kind eq 'command' && @words) {
      $config{command} = \@words;
    } elsif ($kind eq 'option' && @words && $words[0] =~ /^([A-Za-z][\w-]*)=(.+)$/) {
      my ($name, $value) = ($1, $2);
      shift @words;
      $name =~ tr/-/_/;
      if ($value eq '*') {
        $config{any}{$name} = \@words;
      } else {
        $config{exact}{$name}{$value} = \@words;
      }
    } elsif ($kind eq 'default' && @words == 1 && $words[0] =~ /^([A-Za-z][\w-]*)=(.+)$/) {
      my ($name, $value) = ($1, $2);
      $name =~ tr/-/_/;
      push @{$config{default_order}}, $name unless exists $config{defaults}{$name};
      $config{defaults}{$name} = $value;
    } else {
      fail("$PROG: $where line $line_number: expected 'command ...', 'option NAME=VALUE ...' "
        . "or 'default NAME=VALUE', got '$line'\n");
    }
  }
  fail("$PROG: $where has no 'command' line (e.g. 'command sbatch --export=PATH')\n")
    unless $config{command};
  $config{where} = $where;
  return \%config;
}

# The submit command and its options for the given [name, value] options,
# then for the config's defaults of options not given.
sub sbatch_arguments {
  my ($config, $options) = @_;
  my @arguments = @{$config->{command}};
  my %given = map { $_->[0] => 1 } @$options;
  my @wanted = (@$options, map { [$_, $config->{defaults}{$_}] }
    grep { !$given{$_} } @{$config->{default_order}});
  for my $option (@wanted) {
    my ($name, $value) = @$option;
    my $words = $config->{exact}{$name}{$value};
    if (!$words && $config->{any}{$name}) {
      $words = [map { (my $word = $_) =~ s/\$0/$value/g; $word } @{$config->{any}{$name}}];
    }
    if (!$words) {
      (my $flag = $name) =~ tr/_/-/;
      fail("$PROG: option --$flag $value is not allowed by $config->{where}\n");
    }
    push @arguments, @$words;
  }
  return @arguments;
}

# The bash script each array task runs (see the top of this file).
sub write_batch_script {
  my $name = $job->{job_name};
  my $substitute = sub {
    my ($variable) = @_;
    return defined $name ? "$variable=\${$variable//$name/\$slurm_pl_job}\n" : '';
  };
  my $text = "#!/usr/bin/env bash\n"
    . "# Written by utils/slurm.pl for: " . join(' ', map { shell_quote($_) } @sbatch) . "\n"
    . "# Runs task \$SLURM_ARRAY_TASK_ID of the array job; see utils/slurm.pl.\n"
    . 'cd ' . shell_quote(getcwd()) . " || exit 1\n"
    . "slurm_pl_job=\${SLURM_ARRAY_TASK_ID:?not started as a Slurm array task}\n"
    . 'slurm_pl_command=' . shell_quote(command_string(@{$job->{command}})) . "\n"
    . $substitute->('slurm_pl_command')
    . 'slurm_pl_log=' . shell_quote($log) . "\n"
    . $substitute->('slurm_pl_log')
    . 'slurm_pl_marker=' . shell_quote($marker_prefix) . "\$slurm_pl_job\n"
    . <<"END";
mkdir -p "\$(dirname "\$slurm_pl_log")" || exit 1
{
  printf '# %s\\n' "\$slurm_pl_command"
  printf '# Started at %s\\n' "\$(date)"
  printf '#\\n'
} > "\$slurm_pl_log" || exit 1
# Slurm sends SIGTERM to every process of a task it stops (scancel, time
# limit); note it and carry on, so that the footer and marker get written.
trap 'echo "# slurm.pl task got SIGTERM" >> "\$slurm_pl_log"' TERM
slurm_pl_start=\$(date +%s)
(
  if [ -f ./path.sh ]; then . ./path.sh; fi
  exec bash -c "\$slurm_pl_command"
) < /dev/null >> "\$slurm_pl_log" 2>&1
slurm_pl_code=\$?
slurm_pl_end=\$(date +%s)
if [ -n "\$(tail -c 1 "\$slurm_pl_log")" ]; then echo >> "\$slurm_pl_log"; fi  # footer on its own line
printf '# Accounting: time=%d threads=%s\\n' \$((slurm_pl_end - slurm_pl_start)) @{[shell_quote($threads)]} >> "\$slurm_pl_log"
printf '# Ended (code %d) at %s\\n' "\$slurm_pl_code" "\$(date)" >> "\$slurm_pl_log"
echo "\$slurm_pl_code" > "\$slurm_pl_marker.tmp" && mv "\$slurm_pl_marker.tmp" "\$slurm_pl_marker"
exit "\$slurm_pl_code"
END
  open my $fh, '>', $script or fail("$PROG: cannot write $script: $!\n");
  print $fh $text;
  close $fh or fail("$PROG: cannot write $script: $!\n");
  chmod 0755, $script;
}

# Run sbatch; return the job id. A signal caught meanwhile cancels the job.
sub submit {
  open my $pipe, '-|', @sbatch or fail("$PROG: cannot run $sbatch[0]: $!\n");
  my $output = do { local $/; <$pipe> } // '';
  close $pipe;
  my $status = $?;
  my ($id) = $output =~ /Submitted batch job ([0-9]+)/;
  ($id) = $output =~ /^\s*([0-9]+)(?:;\S*)?\s*$/ unless defined $id;    # sbatch --parsable
  if ($status != 0 || !defined $id) {
    chomp $output;
    print STDERR "$PROG: submitting failed: ", join(' ', map { shell_quote($_) } @sbatch), "\n";
    print STDERR "$PROG: sbatch said: $output\n" if $output ne '';
    exit 1;
  }
  stop_if_caught($id);
  return $id;
}

sub stop_if_caught {
  my ($id) = @_;
  return unless $caught;
  system('scancel', $id);
  print STDERR "$PROG: caught SIG$caught, cancelled job $id\n";
  exit 128 + $SIGNAL_NUMBER{$caught};
}

sub fail {
  print STDERR @_;
  exit 1;
}

# Remove this run's done markers (left by an interrupted earlier run with our pid, or ours).
sub remove_markers {
  my $name = basename($marker_prefix);
  opendir my $dir, $queue_dir or return;
  unlink map { "$queue_dir/$_" } grep { index($_, $name) == 0 } readdir $dir;
  closedir $dir;
}

sub pause {
  my ($seconds) = @_;
  select(undef, undef, undef, $seconds);
}

# Wait until every task wrote its marker or left the queue without one;
# report failures; return the exit status.
sub wait_for_tasks {
  my $poll = $ENV{SLURM_PL_POLL} // 10;
  fail("$PROG: SLURM_PL_POLL must be a positive number of seconds, not '$poll'\n")
    unless $poll =~ /^(?:[0-9]+\.?[0-9]*|\.[0-9]+)$/ && $poll > 0;
  my @tasks = ($job->{first} .. $job->{last});
  my (%code, %missing, %dead);    # task -> exit code | times seen gone | sacct state
  my $hopeless = 0;               # looks in a row that found a task pending for a reason in %NEVER_STARTS
  my $marker_pause = $poll < 1 ? $poll : 1;
  my $queue_pause = $poll;
  my $next_queue_check = time + $queue_pause;
  while (1) {
    stop_if_caught($job_id);
    read_markers(\%code);
    my @waiting = grep { !exists $code{$_} && !exists $dead{$_} } @tasks;
    last unless @waiting;
    if (time >= $next_queue_check) {
      my $alive = tasks_in_queue();
      read_markers(\%code);    # a task may have finished since squeue looked
      for my $task (@waiting) {
        next if exists $code{$task};
        if (!$alive || $alive->{$task}) {
          delete $missing{$task};
        } elsif (++$missing{$task} >= 2) {    # gone at two looks: it died without a marker
          $dead{$task} = task_state($task);
        }
      }
      my $reason = $alive && (grep { exists $NEVER_STARTS{$_} } values %$alive)[0];
      if ($reason) {
        cancel_never_starting($reason) if ++$hopeless >= 2;
      } else {
        $hopeless = 0;
      }
      $queue_pause = $queue_pause * 1.5 > 3 * $poll ? 3 * $poll : $queue_pause * 1.5;
      $next_queue_check = time + $queue_pause;
    }
    pause($marker_pause);
    $marker_pause = $marker_pause * 1.5 > 5 ? 5 : $marker_pause * 1.5;
    $marker_pause = $poll if $marker_pause > $poll;
  }
  remove_markers();

  my @failed = grep { exists $dead{$_} || $code{$_} != 0 } @tasks;
  return 0 unless @failed;
  print STDERR failure_message($PROG, scalar(@tasks), map { substitute_job($log, $job->{job_name}, $_) } @failed);
  for my $task (grep { exists $dead{$_} } @failed) {
    print STDERR "$PROG: task $task of job $job_id ended without finishing its log (sacct state: $dead{$task});"
      . " Slurm's output is in $queue_dir/$base.$task.out\n";
  }
  return 1;
}

sub read_markers {
  my ($code) = @_;
  for my $task ($job->{first} .. $job->{last}) {
    next if exists $code->{$task};
    open my $fh, '<', "$marker_prefix$task" or next;
    my $text = <$fh> // '';
    $code->{$task} = $1 if $text =~ /^\s*(-?[0-9]+)\s*$/;
  }
}

# Task ids squeue still lists (pending, running, completing), each mapped to
# the reason it is pending, or to its state when it is not; undef when squeue
# could not tell (then no task is judged).
sub tasks_in_queue {
  my $output = `squeue --noheader --array --jobs=$job_id --format='%K %T %r' 2>&1`;
  my $status = $?;
  return {} if $status != 0 && $output =~ /Invalid job id/i;    # the job has left the queue
  return undef if $status != 0;
  my %alive;
  while ($output =~ /^\s*([0-9]+)[ \t]+(\S+)[ \t]+(\S+)[ \t]*$/mg) {    # "%K %T %r": reason None unless pending
    $alive{$1} = $2 eq 'PENDING' ? $3 : $2;
  }
  return \%alive;
}

sub cancel_never_starting {
  my ($reason) = @_;
  system('scancel', $job_id);
  remove_markers();
  fail("$PROG: job $job_id (log $log) cannot start: squeue says it is pending for $reason, $NEVER_STARTS{$reason};"
    . " cancelled it. Ask for less (--num-threads, --mem, --gpu, --time) or another partition (conf/slurm.conf)\n");
}

# sacct's state of one task, asked once, when it looks dead.
sub task_state {
  my ($task) = @_;
  my $output = `sacct --noheader --parsable2 --allocations --jobs=${job_id}_$task --format=State 2> /dev/null`;
  my ($state) = $? == 0 ? $output =~ /^\s*(\S[^\n]*?)\s*$/m : ();
  return $state // 'unknown';
}
