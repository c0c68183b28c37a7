// Canary tokens: random markers the security team plants in documents and repositories.
// Format (docs/signatures.md): "DLPC1-" then 26 base32 characters (A-Z, 2-7) from 16 random bytes.
// Make them with `dlp-signatures canary`.

rule canary_token
{
    meta:
        severity = "critical"
        category = "canary"
        description = "A planted canary token: a marked document or repository was copied"
    strings:
        $token = /DLPC1-[A-Z2-7]{26}/ ascii wide
    condition:
        $token
}
