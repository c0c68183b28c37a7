// Private keys and cloud credentials: secrets that must never leave a workstation.

rule private_key_pem
{
    meta:
        severity = "critical"
        category = "secret"
        description = "PEM private key (RSA, EC, DSA, OpenSSH, PKCS#8) with its key material"
    strings:
        // The header alone appears in parsers and docs; a key has base64 right after it.
        $pem = /-----BEGIN (RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----\r?\n(Proc-Type:[^\n]{1,64}\n(DEK-Info:[^\n]{1,128}\n)?\r?\n)?[A-Za-z0-9+\/]{60}/
    condition:
        $pem
}

rule pgp_private_key
{
    meta:
        severity = "critical"
        category = "secret"
        description = "ASCII-armoured PGP private key block"
    strings:
        $pgp = /-----BEGIN PGP PRIVATE KEY BLOCK-----\r?\n([A-Za-z]+: [^\n]{1,128}\n)*\r?\n[A-Za-z0-9+\/]{60}/
    condition:
        $pgp
}

rule aws_access_key_id
{
    meta:
        severity = "high"
        category = "secret"
        description = "AWS access key id (long-term AKIA or temporary ASIA)"
    strings:
        $id = /\b(AKIA|ASIA)[0-9A-Z]{16}\b/
        $example = "AKIAIOSFODNN7EXAMPLE"  // the placeholder in AWS documentation
    condition:
        #id > #example
}

rule aws_secret_access_key
{
    meta:
        severity = "critical"
        category = "secret"
        description = "AWS secret access key assigned in a config file, script or environment"
    strings:
        $secret = /(aws_secret_access_key|AWS_SECRET_ACCESS_KEY|aws_secret_key|secretAccessKey|SecretAccessKey)["']?[ \t]*[:=][ \t]*["']?[A-Za-z0-9\/+]{40}\b/
    condition:
        $secret
}

rule gcp_service_account_key
{
    meta:
        severity = "critical"
        category = "secret"
        description = "Google Cloud service-account key file (JSON)"
    strings:
        $type = /"type"[ \t\r\n]*:[ \t\r\n]*"service_account"/
        $key = "\"private_key\""
        $pem = "-----BEGIN PRIVATE KEY-----"
    condition:
        $type and $key and $pem
}

rule azure_storage_key
{
    meta:
        severity = "critical"
        category = "secret"
        description = "Azure storage account connection string with its account key"
    strings:
        $conn = /AccountKey=[A-Za-z0-9+\/]{86}==/
    condition:
        $conn
}

rule github_token
{
    meta:
        severity = "high"
        category = "secret"
        description = "GitHub personal access, OAuth, app or fine-grained token"
    strings:
        $classic = /\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b/
        $fine = /\bgithub_pat_[A-Za-z0-9_]{82}\b/
    condition:
        any of them
}

rule slack_token
{
    meta:
        severity = "high"
        category = "secret"
        description = "Slack bot, user or app token"
    strings:
        $token = /\bxox[baprs]-[0-9]{6,16}-[0-9A-Za-z-]{10,72}/
    condition:
        $token
}
