// Proprietary source headers. Open-source licence headers (MIT, BSD, Apache) must not fire:
// "All rights reserved" alone appears in BSD licences, so it needs a proprietary notice beside it.
// For the customer's own name, render templates/copyright_owner.yar.in with
// `dlp-signatures copyright-rule --owner NAME`.

rule proprietary_source_header
{
    meta:
        severity = "high"
        category = "source_code"
        description = "Header of a proprietary source file (unauthorized copying prohibited)"
    strings:
        $unauthorized = /unauthori[sz]ed copying of this file,? via any medium,? is strictly prohibited/ nocase
        $proprietary = /proprietary (and|&) confidential|proprietary software|this (file|software|source code) is proprietary/ nocase
        $reserved = "All rights reserved" nocase
        $licensed = /licensed under|permission is hereby granted|redistribution and use in source/ nocase
    condition:
        $unauthorized or ($proprietary and $reserved and not $licensed)
}
