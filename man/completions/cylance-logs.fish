# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_cylance_logs_global_optspecs
    string join \n app-id= tenant-id= app-secret-file= region= api-url= ca-file= output= state-dir= sources= initial-lookback= overlap= timeout= lock-wait= max-runtime= concurrency= max-rps= metrics-file= v/verbose h/help V/version
end

function __fish_cylance_logs_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_cylance_logs_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_cylance_logs_using_subcommand
    set -l cmd (__fish_cylance_logs_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -l app-id -d 'Application ID of the Cylance API application. Required. [env: CYLANCE_APP_ID]' -r
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -l tenant-id -d 'Tenant ID. Required. Written into every output line as "tenant_id". [env: CYLANCE_TENANT_ID]' -r
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -l app-secret-file -d 'File holding the application secret (a trailing newline is ignored): a regular file of at most 64 KiB. Default: $CREDENTIALS_DIRECTORY/cylance-app-secret when that exists, else the CYLANCE_APP_SECRET variable. [env: CYLANCE_APP_SECRET_FILE]' -r
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -l region -d 'API region: na, us-gov, apne1, au, euc1 or sae1. Default: na. [env: CYLANCE_REGION]' -r
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -l api-url -d 'Base URL of the API, instead of the region\'s host (proxies, tests). http:// is accepted only for loopback addresses; credentials (user:password@), a query or a fragment are refused. Redirects are never followed. [env: CYLANCE_API_URL]' -r
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -l ca-file -d 'PEM file of the CA certificates to trust instead of the bundled Mozilla roots, for TLS-inspecting proxies. Default: the bundled roots. [env: CYLANCE_LOGS_CA_FILE]' -r
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -l output -d 'Output file, appended to; "-" is standard output. Default: $LOGS_DIRECTORY/cylance-protect.log, as root /var/log/cylance-protect.log, else cylance-protect.log in the user\'s state directory. [env: CYLANCE_LOGS_OUTPUT]' -r
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -l state-dir -d 'Directory for the checkpoint and the run lock. Default: $STATE_DIRECTORY, as root /var/lib/cylance-logs, else the user\'s state directory. [env: CYLANCE_LOGS_STATE_DIR]' -r
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -l sources -d 'Comma-separated sources to fetch: threats, detections. Default: threats,detections. [env: CYLANCE_LOGS_SOURCES]' -r
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -l initial-lookback -d 'How far back the first poll without a checkpoint reaches. Default: 24h; at most 3650d. [env: CYLANCE_LOGS_INITIAL_LOOKBACK]' -r
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -l overlap -d 'How far before the cursor each poll looks again, for late arrivals. Default: 10m; at most 1d. [env: CYLANCE_LOGS_OVERLAP]' -r
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -l timeout -d 'Timeout of each HTTP request; shorter when --max-runtime leaves less time. Default: 30s; at most 10m. [env: CYLANCE_LOGS_TIMEOUT]' -r
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -l lock-wait -d 'Wait this long for another run on the same state directory to finish, instead of exiting 75 at once. Default: 0s; at most 1d. [env: CYLANCE_LOGS_LOCK_WAIT]' -r
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -l max-runtime -d 'Stop fetching after this long, commit what was written and exit 75; 0 means no limit. No request outlives it. Default: 50s for poll (under the timer\'s minute), no limit for backfill; at most 7d. [env: CYLANCE_LOGS_MAX_RUNTIME]' -r
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -l concurrency -d 'List pages fetched at once within a window; pages are still written in order. Default: 4; 1 to 16. [env: CYLANCE_LOGS_CONCURRENCY]' -r
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -l max-rps -d 'Requests per second at most (all threads together), so that a backfill stays under the API\'s rate limit; 0 means no limit. Default: 10. [env: CYLANCE_LOGS_MAX_RPS]' -r
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -l metrics-file -d 'Write run metrics for Prometheus\'s node_exporter textfile collector to this file (replaced atomically at the end of each poll or backfill): last success per source, events written, last exit code, duration, requests, retries. Default: none. [env: CYLANCE_LOGS_METRICS_FILE]' -r
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -s v -l verbose -d 'More detail on stderr: -v shows each request, -vv adds response sizes'
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -s V -l version -d 'Print version'
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -f -a "poll" -d 'Fetch what changed since the last run and append it (the timer\'s job)'
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -f -a "backfill" -d 'Write the events of a past window, before what poll already wrote'
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -f -a "check" -d 'Check configuration, credentials and each source; write nothing'
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -f -a "status" -d 'Show the checkpoint: cursor per source, last run, events written'
complete -c cylance-logs -n "__fish_cylance_logs_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -l app-id -d 'Application ID of the Cylance API application. Required. [env: CYLANCE_APP_ID]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -l tenant-id -d 'Tenant ID. Required. Written into every output line as "tenant_id". [env: CYLANCE_TENANT_ID]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -l app-secret-file -d 'File holding the application secret (a trailing newline is ignored): a regular file of at most 64 KiB. Default: $CREDENTIALS_DIRECTORY/cylance-app-secret when that exists, else the CYLANCE_APP_SECRET variable. [env: CYLANCE_APP_SECRET_FILE]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -l region -d 'API region: na, us-gov, apne1, au, euc1 or sae1. Default: na. [env: CYLANCE_REGION]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -l api-url -d 'Base URL of the API, instead of the region\'s host (proxies, tests). http:// is accepted only for loopback addresses; credentials (user:password@), a query or a fragment are refused. Redirects are never followed. [env: CYLANCE_API_URL]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -l ca-file -d 'PEM file of the CA certificates to trust instead of the bundled Mozilla roots, for TLS-inspecting proxies. Default: the bundled roots. [env: CYLANCE_LOGS_CA_FILE]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -l output -d 'Output file, appended to; "-" is standard output. Default: $LOGS_DIRECTORY/cylance-protect.log, as root /var/log/cylance-protect.log, else cylance-protect.log in the user\'s state directory. [env: CYLANCE_LOGS_OUTPUT]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -l state-dir -d 'Directory for the checkpoint and the run lock. Default: $STATE_DIRECTORY, as root /var/lib/cylance-logs, else the user\'s state directory. [env: CYLANCE_LOGS_STATE_DIR]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -l sources -d 'Comma-separated sources to fetch: threats, detections. Default: threats,detections. [env: CYLANCE_LOGS_SOURCES]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -l initial-lookback -d 'How far back the first poll without a checkpoint reaches. Default: 24h; at most 3650d. [env: CYLANCE_LOGS_INITIAL_LOOKBACK]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -l overlap -d 'How far before the cursor each poll looks again, for late arrivals. Default: 10m; at most 1d. [env: CYLANCE_LOGS_OVERLAP]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -l timeout -d 'Timeout of each HTTP request; shorter when --max-runtime leaves less time. Default: 30s; at most 10m. [env: CYLANCE_LOGS_TIMEOUT]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -l lock-wait -d 'Wait this long for another run on the same state directory to finish, instead of exiting 75 at once. Default: 0s; at most 1d. [env: CYLANCE_LOGS_LOCK_WAIT]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -l max-runtime -d 'Stop fetching after this long, commit what was written and exit 75; 0 means no limit. No request outlives it. Default: 50s for poll (under the timer\'s minute), no limit for backfill; at most 7d. [env: CYLANCE_LOGS_MAX_RUNTIME]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -l concurrency -d 'List pages fetched at once within a window; pages are still written in order. Default: 4; 1 to 16. [env: CYLANCE_LOGS_CONCURRENCY]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -l max-rps -d 'Requests per second at most (all threads together), so that a backfill stays under the API\'s rate limit; 0 means no limit. Default: 10. [env: CYLANCE_LOGS_MAX_RPS]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -l metrics-file -d 'Write run metrics for Prometheus\'s node_exporter textfile collector to this file (replaced atomically at the end of each poll or backfill): last success per source, events written, last exit code, duration, requests, retries. Default: none. [env: CYLANCE_LOGS_METRICS_FILE]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -s v -l verbose -d 'More detail on stderr: -v shows each request, -vv adds response sizes'
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand poll" -s h -l help -d 'Print help'
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l since -d 'Start of the window: RFC 3339 (2024-05-01T00:00:00Z), a date (2024-05-01, midnight UTC) or an age before now (30d, 12h, 90m)' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l until -d 'End of the window (exclusive), same forms as --since. Default: the start of what is already written, so backfill fills in the history with no overlap; with no checkpoint, now' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l app-id -d 'Application ID of the Cylance API application. Required. [env: CYLANCE_APP_ID]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l tenant-id -d 'Tenant ID. Required. Written into every output line as "tenant_id". [env: CYLANCE_TENANT_ID]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l app-secret-file -d 'File holding the application secret (a trailing newline is ignored): a regular file of at most 64 KiB. Default: $CREDENTIALS_DIRECTORY/cylance-app-secret when that exists, else the CYLANCE_APP_SECRET variable. [env: CYLANCE_APP_SECRET_FILE]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l region -d 'API region: na, us-gov, apne1, au, euc1 or sae1. Default: na. [env: CYLANCE_REGION]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l api-url -d 'Base URL of the API, instead of the region\'s host (proxies, tests). http:// is accepted only for loopback addresses; credentials (user:password@), a query or a fragment are refused. Redirects are never followed. [env: CYLANCE_API_URL]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l ca-file -d 'PEM file of the CA certificates to trust instead of the bundled Mozilla roots, for TLS-inspecting proxies. Default: the bundled roots. [env: CYLANCE_LOGS_CA_FILE]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l output -d 'Output file, appended to; "-" is standard output. Default: $LOGS_DIRECTORY/cylance-protect.log, as root /var/log/cylance-protect.log, else cylance-protect.log in the user\'s state directory. [env: CYLANCE_LOGS_OUTPUT]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l state-dir -d 'Directory for the checkpoint and the run lock. Default: $STATE_DIRECTORY, as root /var/lib/cylance-logs, else the user\'s state directory. [env: CYLANCE_LOGS_STATE_DIR]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l sources -d 'Comma-separated sources to fetch: threats, detections. Default: threats,detections. [env: CYLANCE_LOGS_SOURCES]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l initial-lookback -d 'How far back the first poll without a checkpoint reaches. Default: 24h; at most 3650d. [env: CYLANCE_LOGS_INITIAL_LOOKBACK]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l overlap -d 'How far before the cursor each poll looks again, for late arrivals. Default: 10m; at most 1d. [env: CYLANCE_LOGS_OVERLAP]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l timeout -d 'Timeout of each HTTP request; shorter when --max-runtime leaves less time. Default: 30s; at most 10m. [env: CYLANCE_LOGS_TIMEOUT]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l lock-wait -d 'Wait this long for another run on the same state directory to finish, instead of exiting 75 at once. Default: 0s; at most 1d. [env: CYLANCE_LOGS_LOCK_WAIT]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l max-runtime -d 'Stop fetching after this long, commit what was written and exit 75; 0 means no limit. No request outlives it. Default: 50s for poll (under the timer\'s minute), no limit for backfill; at most 7d. [env: CYLANCE_LOGS_MAX_RUNTIME]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l concurrency -d 'List pages fetched at once within a window; pages are still written in order. Default: 4; 1 to 16. [env: CYLANCE_LOGS_CONCURRENCY]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l max-rps -d 'Requests per second at most (all threads together), so that a backfill stays under the API\'s rate limit; 0 means no limit. Default: 10. [env: CYLANCE_LOGS_MAX_RPS]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -l metrics-file -d 'Write run metrics for Prometheus\'s node_exporter textfile collector to this file (replaced atomically at the end of each poll or backfill): last success per source, events written, last exit code, duration, requests, retries. Default: none. [env: CYLANCE_LOGS_METRICS_FILE]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -s v -l verbose -d 'More detail on stderr: -v shows each request, -vv adds response sizes'
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand backfill" -s h -l help -d 'Print help'
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -l app-id -d 'Application ID of the Cylance API application. Required. [env: CYLANCE_APP_ID]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -l tenant-id -d 'Tenant ID. Required. Written into every output line as "tenant_id". [env: CYLANCE_TENANT_ID]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -l app-secret-file -d 'File holding the application secret (a trailing newline is ignored): a regular file of at most 64 KiB. Default: $CREDENTIALS_DIRECTORY/cylance-app-secret when that exists, else the CYLANCE_APP_SECRET variable. [env: CYLANCE_APP_SECRET_FILE]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -l region -d 'API region: na, us-gov, apne1, au, euc1 or sae1. Default: na. [env: CYLANCE_REGION]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -l api-url -d 'Base URL of the API, instead of the region\'s host (proxies, tests). http:// is accepted only for loopback addresses; credentials (user:password@), a query or a fragment are refused. Redirects are never followed. [env: CYLANCE_API_URL]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -l ca-file -d 'PEM file of the CA certificates to trust instead of the bundled Mozilla roots, for TLS-inspecting proxies. Default: the bundled roots. [env: CYLANCE_LOGS_CA_FILE]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -l output -d 'Output file, appended to; "-" is standard output. Default: $LOGS_DIRECTORY/cylance-protect.log, as root /var/log/cylance-protect.log, else cylance-protect.log in the user\'s state directory. [env: CYLANCE_LOGS_OUTPUT]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -l state-dir -d 'Directory for the checkpoint and the run lock. Default: $STATE_DIRECTORY, as root /var/lib/cylance-logs, else the user\'s state directory. [env: CYLANCE_LOGS_STATE_DIR]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -l sources -d 'Comma-separated sources to fetch: threats, detections. Default: threats,detections. [env: CYLANCE_LOGS_SOURCES]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -l initial-lookback -d 'How far back the first poll without a checkpoint reaches. Default: 24h; at most 3650d. [env: CYLANCE_LOGS_INITIAL_LOOKBACK]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -l overlap -d 'How far before the cursor each poll looks again, for late arrivals. Default: 10m; at most 1d. [env: CYLANCE_LOGS_OVERLAP]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -l timeout -d 'Timeout of each HTTP request; shorter when --max-runtime leaves less time. Default: 30s; at most 10m. [env: CYLANCE_LOGS_TIMEOUT]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -l lock-wait -d 'Wait this long for another run on the same state directory to finish, instead of exiting 75 at once. Default: 0s; at most 1d. [env: CYLANCE_LOGS_LOCK_WAIT]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -l max-runtime -d 'Stop fetching after this long, commit what was written and exit 75; 0 means no limit. No request outlives it. Default: 50s for poll (under the timer\'s minute), no limit for backfill; at most 7d. [env: CYLANCE_LOGS_MAX_RUNTIME]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -l concurrency -d 'List pages fetched at once within a window; pages are still written in order. Default: 4; 1 to 16. [env: CYLANCE_LOGS_CONCURRENCY]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -l max-rps -d 'Requests per second at most (all threads together), so that a backfill stays under the API\'s rate limit; 0 means no limit. Default: 10. [env: CYLANCE_LOGS_MAX_RPS]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -l metrics-file -d 'Write run metrics for Prometheus\'s node_exporter textfile collector to this file (replaced atomically at the end of each poll or backfill): last success per source, events written, last exit code, duration, requests, retries. Default: none. [env: CYLANCE_LOGS_METRICS_FILE]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -s v -l verbose -d 'More detail on stderr: -v shows each request, -vv adds response sizes'
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand check" -s h -l help -d 'Print help'
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l max-age -d 'Exit 2 (CRITICAL, as Nagios plugins do) when a source\'s last success is older than this, or there is none. The first line is the verdict, "OK: ..." or "CRITICAL: ..." with the reason (Nagios shows only that line); the details follow. Default: no check' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l app-id -d 'Application ID of the Cylance API application. Required. [env: CYLANCE_APP_ID]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l tenant-id -d 'Tenant ID. Required. Written into every output line as "tenant_id". [env: CYLANCE_TENANT_ID]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l app-secret-file -d 'File holding the application secret (a trailing newline is ignored): a regular file of at most 64 KiB. Default: $CREDENTIALS_DIRECTORY/cylance-app-secret when that exists, else the CYLANCE_APP_SECRET variable. [env: CYLANCE_APP_SECRET_FILE]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l region -d 'API region: na, us-gov, apne1, au, euc1 or sae1. Default: na. [env: CYLANCE_REGION]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l api-url -d 'Base URL of the API, instead of the region\'s host (proxies, tests). http:// is accepted only for loopback addresses; credentials (user:password@), a query or a fragment are refused. Redirects are never followed. [env: CYLANCE_API_URL]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l ca-file -d 'PEM file of the CA certificates to trust instead of the bundled Mozilla roots, for TLS-inspecting proxies. Default: the bundled roots. [env: CYLANCE_LOGS_CA_FILE]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l output -d 'Output file, appended to; "-" is standard output. Default: $LOGS_DIRECTORY/cylance-protect.log, as root /var/log/cylance-protect.log, else cylance-protect.log in the user\'s state directory. [env: CYLANCE_LOGS_OUTPUT]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l state-dir -d 'Directory for the checkpoint and the run lock. Default: $STATE_DIRECTORY, as root /var/lib/cylance-logs, else the user\'s state directory. [env: CYLANCE_LOGS_STATE_DIR]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l sources -d 'Comma-separated sources to fetch: threats, detections. Default: threats,detections. [env: CYLANCE_LOGS_SOURCES]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l initial-lookback -d 'How far back the first poll without a checkpoint reaches. Default: 24h; at most 3650d. [env: CYLANCE_LOGS_INITIAL_LOOKBACK]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l overlap -d 'How far before the cursor each poll looks again, for late arrivals. Default: 10m; at most 1d. [env: CYLANCE_LOGS_OVERLAP]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l timeout -d 'Timeout of each HTTP request; shorter when --max-runtime leaves less time. Default: 30s; at most 10m. [env: CYLANCE_LOGS_TIMEOUT]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l lock-wait -d 'Wait this long for another run on the same state directory to finish, instead of exiting 75 at once. Default: 0s; at most 1d. [env: CYLANCE_LOGS_LOCK_WAIT]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l max-runtime -d 'Stop fetching after this long, commit what was written and exit 75; 0 means no limit. No request outlives it. Default: 50s for poll (under the timer\'s minute), no limit for backfill; at most 7d. [env: CYLANCE_LOGS_MAX_RUNTIME]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l concurrency -d 'List pages fetched at once within a window; pages are still written in order. Default: 4; 1 to 16. [env: CYLANCE_LOGS_CONCURRENCY]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l max-rps -d 'Requests per second at most (all threads together), so that a backfill stays under the API\'s rate limit; 0 means no limit. Default: 10. [env: CYLANCE_LOGS_MAX_RPS]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l metrics-file -d 'Write run metrics for Prometheus\'s node_exporter textfile collector to this file (replaced atomically at the end of each poll or backfill): last success per source, events written, last exit code, duration, requests, retries. Default: none. [env: CYLANCE_LOGS_METRICS_FILE]' -r
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -l json -d 'Print the checkpoint as JSON, for monitoring'
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -s v -l verbose -d 'More detail on stderr: -v shows each request, -vv adds response sizes'
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand status" -s h -l help -d 'Print help'
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand help; and not __fish_seen_subcommand_from poll backfill check status help" -f -a "poll" -d 'Fetch what changed since the last run and append it (the timer\'s job)'
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand help; and not __fish_seen_subcommand_from poll backfill check status help" -f -a "backfill" -d 'Write the events of a past window, before what poll already wrote'
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand help; and not __fish_seen_subcommand_from poll backfill check status help" -f -a "check" -d 'Check configuration, credentials and each source; write nothing'
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand help; and not __fish_seen_subcommand_from poll backfill check status help" -f -a "status" -d 'Show the checkpoint: cursor per source, last run, events written'
complete -c cylance-logs -n "__fish_cylance_logs_using_subcommand help; and not __fish_seen_subcommand_from poll backfill check status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
