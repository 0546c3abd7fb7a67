import Foundation

/// Envoy's `x-forwarded-client-cert`: one element per hop that verified a client certificate,
/// earliest first, each `Key=value` pairs separated by `;`, values optionally quoted (a quoted
/// value may hold `,` and `;`). Gateways set it for the client they verified
/// (`By=<gateway>;URI=<client>`) and trust it only from gateway identities.
package enum ForwardedClientCert {
    /// The SPIFFE ID of the original client: the first element's `URI`.
    package static func originalClient(_ header: String) -> String? {
        elements(header).first?.first { $0.key.lowercased() == "uri" }?.value
    }

    /// The elements and their pairs, in order.
    package static func elements(_ header: String) -> [[(key: String, value: String)]] {
        var elements: [[(key: String, value: String)]] = [], pairs: [(key: String, value: String)] = []
        var field = "", quoted = false
        func endPair() {
            let parts = field.split(separator: "=", maxSplits: 1)
            if parts.count == 2 {
                var value = parts[1].trimmingCharacters(in: .whitespaces)
                if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
                pairs.append((parts[0].trimmingCharacters(in: .whitespaces), value))
            }
            field = ""
        }
        for character in header {
            switch character {
            case "\"": quoted.toggle(); field.append(character)
            case ";" where !quoted: endPair()
            case "," where !quoted:
                endPair()
                if !pairs.isEmpty { elements.append(pairs) }
                pairs = []
            default: field.append(character)
            }
        }
        endPair()
        if !pairs.isEmpty { elements.append(pairs) }
        return elements
    }
}
