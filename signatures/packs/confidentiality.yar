// Confidentiality markings in the forms companies put on documents and source headers.
// Strings are ascii and wide so legacy Office files (UTF-16 text) match too.

rule proprietary_and_confidential
{
    meta:
        severity = "high"
        category = "document"
        description = "Strong confidentiality marking (proprietary and confidential, strictly confidential...)"
    strings:
        $a = "PROPRIETARY AND CONFIDENTIAL" nocase ascii wide
        $b = "CONFIDENTIAL AND PROPRIETARY" nocase ascii wide
        $c = "STRICTLY CONFIDENTIAL" nocase ascii wide
        $d = "HIGHLY CONFIDENTIAL" nocase ascii wide
        $e = "COMPANY CONFIDENTIAL" nocase ascii wide
        $f = "CONFIDENTIAL - TRADE SECRET" nocase ascii wide
    condition:
        any of them
}

rule confidential_marking
{
    meta:
        severity = "medium"
        category = "document"
        description = "CONFIDENTIAL as a banner line, a classification field or a do-not-distribute notice"
    strings:
        // Upper case on a line of its own, as headers and footers put it.
        $banner = /\n[ \t*#\/-]*CONFIDENTIAL[ \t*#\/-]*\r?\n/ ascii wide
        $label = /classification[ \t]*:[ \t]*(confidential|restricted)/ nocase ascii wide
        $notice = /confidential[ \t]*[-:,|][ \t]*(do not (distribute|copy|forward|share)|not for (distribution|external))/ nocase ascii wide
    condition:
        any of them
}

rule internal_use_only
{
    meta:
        severity = "low"
        category = "document"
        description = "Internal-use-only marking"
    strings:
        $a = "INTERNAL USE ONLY" nocase ascii wide
        $b = "NOT FOR EXTERNAL DISTRIBUTION" nocase ascii wide
        $c = "INTERNAL - DO NOT DISTRIBUTE" nocase ascii wide
    condition:
        any of them
}
