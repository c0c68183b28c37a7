<#
.SYNOPSIS
    Installs, upgrades or removes the DLP agent as the Windows service DlpAgent (silent).

.DESCRIPTION
    For Intune (Win32 app), SCCM/MECM and GPO startup scripts; runs elevated (SYSTEM or an administrator).

    First install: copies dlp-agent.exe to "%ProgramFiles%\DLP Agent", writes
    "%ProgramData%\DLP Agent\agent.toml" (absolute paths), restricts "%ProgramData%\DLP Agent" to
    SYSTEM and Administrators, enrolls with the collector, registers the service (automatic, delayed
    start, restart on failure) and starts it.
    Run again (upgrade): stops the service, replaces the exe, starts it; agent.toml, credentials and the
    spool are kept, so -Server, -Ca and -Watch only matter on a first install (edit agent.toml later).
    An identical exe with a running service is left alone, so a GPO startup script can run it every boot.
    -Uninstall removes the service and the program; -Purge also removes "%ProgramData%\DLP Agent".

    The token may come from the DLP_TOKEN environment variable instead of -Token; it is needed only
    while the agent is not enrolled. It is never logged (no transcript is kept: a transcript would
    record the command line). The script logs to "%ProgramData%\DLP Agent\logs\install.log".

    Exit codes: 0 done; 1 unexpected error; 2 bad or missing parameters or files; 3 not elevated;
    4 enrollment failed; 5 the service could not be installed, stopped or started.

.EXAMPLE
    powershell.exe -NoProfile -ExecutionPolicy Bypass -File install.ps1 -Server https://collector.example:8443 -Token dlpe_...

.EXAMPLE
    powershell.exe -NoProfile -ExecutionPolicy Bypass -File install.ps1 -Uninstall -Purge
#>
[CmdletBinding(PositionalBinding = $false)]
param(
    [string]$Server,
    [string]$Token,
    [string]$Ca,
    # Several folders: -Watch "C:\Users,D:\Projects" (powershell.exe -File passes one string).
    [string[]]$Watch,
    [string]$Binary,
    [switch]$Uninstall,
    [switch]$Purge,
    # Anything else is refused with exit code 2 rather than prompting or guessing.
    [Parameter(ValueFromRemainingArguments = $true)][string[]]$Unexpected
)

Set-StrictMode -Version 3.0
$ErrorActionPreference = 'Stop'

$ExitError = 1
$ExitUsage = 2
$ExitNotElevated = 3
$ExitEnroll = 4
$ExitService = 5

$ServiceName = 'DlpAgent'
# Under a 32-bit host (some deployment agents) ProgramFiles is the x86 folder; the agent is 64-bit.
$ProgramFilesDir = if ($env:ProgramW6432) { $env:ProgramW6432 } else { $env:ProgramFiles }
$ProgramDir = Join-Path $ProgramFilesDir 'DLP Agent'
$Exe = Join-Path $ProgramDir 'dlp-agent.exe'
$DataDir = Join-Path $env:ProgramData 'DLP Agent'
$StateDir = Join-Path $DataDir 'state'
$LogDir = Join-Path $DataDir 'logs'
$Config = Join-Path $DataDir 'agent.toml'
$CaPath = Join-Path $DataDir 'ca.pem'
$Credentials = Join-Path $StateDir 'credentials.json'
$InstallLog = Join-Path $LogDir 'install.log'
# Well-known SIDs: the group names are translated on non-English Windows.
$SystemSid = '*S-1-5-18'
$AdministratorsSid = '*S-1-5-32-544'

function Write-Log([string]$Message) {
    $line = '{0} {1}' -f (Get-Date -Format 's'), $Message
    Write-Host $line
    if (Test-Path -LiteralPath $LogDir) {
        Add-Content -LiteralPath $InstallLog -Value $line -Encoding UTF8
    }
}

function Stop-Install([int]$Code, [string]$Message) {
    Write-Log "error: $Message"
    exit $Code
}

function Test-Elevated {
    $identity = [Security.Principal.WindowsIdentity]::GetCurrent()
    return ([Security.Principal.WindowsPrincipal]$identity).IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
}

function Get-AgentService {
    return Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
}

# Runs a program; its output (stdout and stderr) goes to the log, its exit code is returned.
function Invoke-Native([string]$Program, [string[]]$Arguments) {
    # Windows PowerShell turns redirected stderr lines into errors, fatal under 'Stop'.
    $ErrorActionPreference = 'Continue'
    $output = & $Program @Arguments 2>&1
    $code = $LASTEXITCODE
    foreach ($line in $output) { Write-Log "  $line" }
    return $code
}

function Invoke-Agent([string[]]$Arguments) {
    return Invoke-Native $Exe $Arguments
}

function Stop-AgentService {
    $service = Get-AgentService
    if ($null -eq $service -or $service.Status -eq 'Stopped') { return }
    Write-Log "stopping $ServiceName"
    if ((Test-Path -LiteralPath $Exe) -and (Test-Path -LiteralPath $Config)) {
        # Waits as long as the agent may take to drain its queue and finish a request.
        $code = Invoke-Agent @('service', 'stop', '--config', $Config)
        if ($code -ne 0) { Stop-Install $ExitService "$ServiceName did not stop (exit $code)" }
    } else {
        Stop-Service -Name $ServiceName -Force
    }
}

# The service's process (and the one-file exe's bootloader around it) can hold dlp-agent.exe for a
# moment after the SCM reports the service stopped: copying over it or deleting it then fails with
# "being used by another process". Retry for up to a minute before giving up.
function Invoke-WhenUnlocked([string]$What, [scriptblock]$Action) {
    for ($attempt = 1; ; $attempt++) {
        try {
            & $Action
            return
        } catch {
            if ($attempt -ge 30) { throw }
            Write-Log "  $What failed ($($_.Exception.Message)); retrying"
            Start-Sleep -Seconds 2
        }
    }
}

# A TOML basic string; Windows paths are written with forward slashes, which the agent accepts.
function ConvertTo-TomlString([string]$Value) {
    if ($Value -match "[`r`n]") { Stop-Install $ExitUsage "a value with a line break: $Value" }
    return '"' + ($Value.Replace('\', '/').Replace('"', '\"')) + '"'
}

# Owners this script and the service create files as (an elevated administrator's default owner is
# the Administrators group).
$TrustedOwners = @('S-1-5-18', 'S-1-5-32-544')

function Get-OwnerSid([string]$Path) {
    return (Get-Acl -LiteralPath $Path).GetOwner([System.Security.Principal.SecurityIdentifier]).Value
}

# Standard users may create folders and files under ProgramData. Until Set-DataDirAcl has locked the
# folder down (owner Administrators, inheritance removed), a configuration, CA file or credentials
# that someone other than SYSTEM or Administrators placed there (one naming another collector, say)
# must not be taken as this installation's: each is set aside as NAME.untrusted-TIMESTAMP, logged,
# and the install goes on without it. Once locked, only administrators can write there, so an
# upgrade keeps every file whoever of them wrote it.
function Set-AsideUntrusted {
    if (-not (Test-Path -LiteralPath $DataDir)) { return }
    $acl = Get-Acl -LiteralPath $DataDir
    $folderOwner = $acl.GetOwner([System.Security.Principal.SecurityIdentifier]).Value
    if ($acl.AreAccessRulesProtected -and ($TrustedOwners -contains $folderOwner)) { return }
    $stamp = Get-Date -Format 'yyyyMMddHHmmss'
    foreach ($path in @($Config, $CaPath, $Credentials)) {
        if (-not (Test-Path -LiteralPath $path -PathType Leaf)) { continue }
        $owner = Get-OwnerSid $path
        if ($TrustedOwners -contains $owner) { continue }
        $aside = "$path.untrusted-$stamp"
        Move-Item -LiteralPath $path -Destination $aside -Force
        Write-Log "warning: $path was owned by $owner, not SYSTEM or Administrators; set aside as $aside and not used"
    }
}

function Set-DataDirAcl {
    # Inheritance removed, full control for SYSTEM and Administrators only: credentials and spool
    # are not readable by the vendor's users. Standard users may create folders in ProgramData: one
    # who made "DLP Agent" (or a folder in it) before the first install would own it, and an owner
    # can rewrite an ACL at any time; entries set on what is inside would survive too. So: owner
    # Administrators throughout, then the folder's own entries (OI)(CI), then everything inside
    # reset to inherit only those.
    $code = Invoke-Native 'icacls.exe' @($DataDir, '/setowner', $AdministratorsSid, '/T', '/Q')
    if ($code -ne 0) { Stop-Install $ExitError "icacls /setowner on $DataDir failed (exit $code)" }
    $code = Invoke-Native 'icacls.exe' @($DataDir, '/inheritance:r', '/grant:r', "${SystemSid}:(OI)(CI)F", "${AdministratorsSid}:(OI)(CI)F", '/Q')
    if ($code -ne 0) { Stop-Install $ExitError "icacls on $DataDir failed (exit $code)" }
    # The state and logs folders always exist here, so the wildcard matches.
    $code = Invoke-Native 'icacls.exe' @((Join-Path $DataDir '*'), '/reset', '/T', '/Q')
    if ($code -ne 0) { Stop-Install $ExitError "icacls /reset inside $DataDir failed (exit $code)" }
}

function Write-AgentConfig {
    $watchPaths = @($Watch | Where-Object { $_ } | ForEach-Object { $_ -split ',' } | ForEach-Object { $_.Trim() } | Where-Object { $_ })
    if ($watchPaths.Count -eq 0) { $watchPaths = @(Join-Path $env:SystemDrive 'Users') }
    $watchList = ($watchPaths | ForEach-Object { ConvertTo-TomlString $_ }) -join ', '
    $caLine = '# ca_file = ' + (ConvertTo-TomlString $CaPath) + '   # PEM CAs for the collector instead of the bundled Mozilla CAs'
    if ($Ca) {
        Copy-Item -LiteralPath $Ca -Destination $CaPath -Force
        $caLine = 'ca_file = ' + (ConvertTo-TomlString $CaPath)
    }
    $text = @"
# DLP agent configuration, written by install.ps1 at the first install and kept on upgrades.
# Keys: docs/agent.md. Check edits with: & "$Exe" check-config --config "$Config"

[server]
url = $(ConvertTo-TomlString $Server)
$caLine
credentials = $(ConvertTo-TomlString $Credentials)

[files]
watch = [$watchList]
exclude = ["**/.cache/**", "**/.git/**", "**/node_modules/**", "**/__pycache__/**", "*.tmp", "*.swp", "*~", "**/AppData/**"]

[usb]
# Windows marks removable drives itself; no mount roots to list.
removable_roots = []

[clipboard]
# A service runs in session 0 and cannot see the users' clipboards.
enabled = false

[rules]
bundle_dir = $(ConvertTo-TomlString (Join-Path $StateDir 'bundle'))

[spool]
path = $(ConvertTo-TomlString (Join-Path $StateDir 'spool.db'))
"@
    # UTF-8 without a byte order mark: TOML readers reject the BOM Windows PowerShell would write.
    [System.IO.File]::WriteAllText($Config, $text.Replace("`r`n", "`n"), (New-Object System.Text.UTF8Encoding $false))
    Write-Log "wrote $Config"
}

function Uninstall-Agent {
    $service = Get-AgentService
    if ($null -ne $service) {
        Stop-AgentService
        if (Test-Path -LiteralPath $Exe) {
            $code = Invoke-Agent @('service', 'remove', '--config', $Config)
        } else {
            $code = Invoke-Native 'sc.exe' @('delete', $ServiceName)
        }
        if ($code -ne 0) { Stop-Install $ExitService "could not remove $ServiceName (exit $code)" }
        Write-Log "removed service $ServiceName"
    }
    if (Test-Path -LiteralPath $ProgramDir) {
        Invoke-WhenUnlocked "removing $ProgramDir" { Remove-Item -LiteralPath $ProgramDir -Recurse -Force }
    }
    if ($Purge) {
        # The log lives in the folder being removed: say it first.
        Write-Log "removing $DataDir (configuration, credentials, spool, logs)"
        if (Test-Path -LiteralPath $DataDir) { Remove-Item -LiteralPath $DataDir -Recurse -Force }
    } else {
        Write-Log "removed the agent; configuration, credentials and spool stay in $DataDir (-Purge removes them)"
    }
}

function Install-Agent {
    if (-not $Binary) { $Binary = Join-Path $PSScriptRoot 'dlp-agent.exe' }
    if (-not (Test-Path -LiteralPath $Binary -PathType Leaf)) { Stop-Install $ExitUsage "no agent binary at $Binary (pass -Binary)" }
    if (-not $Token) { $Token = $env:DLP_TOKEN }
    Set-AsideUntrusted
    $firstInstall = -not (Test-Path -LiteralPath $Config)
    if ($firstInstall) {
        if (-not $Server) { Stop-Install $ExitUsage 'a first install needs -Server URL' }
        if ($Server -notmatch '^https?://') { Stop-Install $ExitUsage '-Server must start with https:// or http://' }
        if ($Ca -and -not (Test-Path -LiteralPath $Ca -PathType Leaf)) { Stop-Install $ExitUsage "CA file $Ca does not exist" }
    } elseif ($Server -or $Ca -or $Watch) {
        Write-Log "keeping the existing $Config (-Server, -Ca and -Watch apply to a first install)"
    }
    $enrolled = Test-Path -LiteralPath $Credentials
    if (-not $enrolled -and (-not $Token -or -not $Server)) {
        Stop-Install $ExitUsage 'not enrolled yet: pass -Server URL and -Token TOKEN (or DLP_TOKEN)'
    }

    foreach ($dir in @($DataDir, $StateDir, $LogDir, $ProgramDir)) {
        if (-not (Test-Path -LiteralPath $dir)) { New-Item -ItemType Directory -Path $dir -Force | Out-Null }
    }
    Set-DataDirAcl

    $service = Get-AgentService
    $sameExe = (Test-Path -LiteralPath $Exe) -and
        ((Get-FileHash -LiteralPath $Exe).Hash -eq (Get-FileHash -LiteralPath $Binary).Hash)
    if ($sameExe -and $enrolled -and $null -ne $service -and $service.Status -eq 'Running') {
        Write-Log "$ServiceName is running this version already; nothing to do"
        return
    }
    if (-not $sameExe) {
        Stop-AgentService
        Invoke-WhenUnlocked "copying $Exe" { Copy-Item -LiteralPath $Binary -Destination $Exe -Force }
        Write-Log "installed $Exe"
    }
    if ($firstInstall) { Write-AgentConfig }

    if (-not $enrolled) {
        # The token travels in the environment, never on a command line others can list.
        $env:DLP_TOKEN = $Token
        try {
            $code = Invoke-Agent @('enroll', '--config', $Config, '--server', $Server)
        } finally {
            Remove-Item Env:DLP_TOKEN -ErrorAction SilentlyContinue
        }
        if ($code -ne 0) {
            if ($firstInstall) {
                # Otherwise the next run would keep this agent.toml and ignore a corrected -Server or -Ca.
                Remove-Item -LiteralPath $Config -Force -ErrorAction SilentlyContinue
                if ($Ca) { Remove-Item -LiteralPath $CaPath -Force -ErrorAction SilentlyContinue }
            }
            Stop-Install $ExitEnroll "enrollment failed (exit $code); the service was not started"
        }
    }

    $code = Invoke-Agent @('service', 'install', '--config', $Config)
    if ($code -ne 0) { Stop-Install $ExitService "could not register $ServiceName (exit $code)" }
    # Restart after a crash or a failed start: 5 s, 5 s, then every minute; the count resets after a day.
    $code = Invoke-Native 'sc.exe' @('failure', $ServiceName, 'reset=', '86400', 'actions=', 'restart/5000/restart/5000/restart/60000')
    if ($code -ne 0) { Stop-Install $ExitService "sc.exe failure $ServiceName failed (exit $code)" }
    # Also when the agent stops itself with an error (bad configuration), not only when it crashes.
    $code = Invoke-Native 'sc.exe' @('failureflag', $ServiceName, '1')
    if ($code -ne 0) { Stop-Install $ExitService "sc.exe failureflag $ServiceName failed (exit $code)" }

    $code = Invoke-Agent @('service', 'start', '--config', $Config)
    if ($code -ne 0) { Stop-Install $ExitService "$ServiceName did not start (exit $code); see $LogDir\agent.log" }
    Write-Log "$ServiceName running; check with: & `"$Exe`" status --config `"$Config`""
}

try {
    if ($Unexpected) {
        Write-Host "error: unexpected argument(s): $($Unexpected -join ' ') (several -Watch folders go comma-separated)"
        exit $ExitUsage
    }
    if ($Purge -and -not $Uninstall) {
        Write-Host 'error: -Purge goes with -Uninstall'
        exit $ExitUsage
    }
    if (-not (Test-Elevated)) {
        Write-Host 'error: run elevated (as SYSTEM or from an administrator prompt)'
        exit $ExitNotElevated
    }
    if ($Uninstall) { Uninstall-Agent } else { Install-Agent }
    exit 0
} catch {
    Write-Log "error: $($_.Exception.Message)"
    exit $ExitError
}
