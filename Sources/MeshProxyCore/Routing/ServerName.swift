/// The TLS server name a client asked for, in one of the two forms a gateway on 15443 accepts:
///
/// - Istio's DNS-SRV cluster key `outbound_.<port>_.<subset>_.<fqdn>`
///   (istio/istio pilot/pkg/model/service.go `BuildDNSSrvSubsetKey`); an empty subset is
///   written `_`, as in `outbound_.8080_._.echo.default.svc.cluster.local`.
/// - a plain `<fqdn>`, meaning the service's port and no subset.
package struct ServerName: Hashable, Sendable, CustomStringConvertible {
    package var host: String
    /// nil for the plain form: "whatever port the service has".
    package var port: Int?
    /// nil when no subset was named.
    package var subset: String?

    package init(host: String, port: Int?, subset: String?) {
        self.host = host
        self.port = port
        self.subset = subset
    }

    /// The Istio form, which a gateway sends when it dials a peer gateway.
    package static func istio(host: String, port: Int, subset: String?) -> ServerName {
        ServerName(host: host, port: port, subset: subset)
    }

    package var istioForm: String {
        "outbound_.\(port.map(String.init) ?? "")_.\(subset ?? "")_.\(host)"
    }

    /// Envoy's name for the upstream cluster this SNI selects: `outbound|port|subset|host`.
    package var envoyClusterName: String { "outbound|\(port.map(String.init) ?? "")|\(subset ?? "")|\(host)" }

    package var description: String { port == nil ? host : istioForm }

    package init(parsing name: String) throws(ServerNameError) {
        guard !name.isEmpty else { throw ServerNameError(name, "is empty") }
        guard name.utf8.count <= 255 else { throw ServerNameError(name, "is longer than 255 bytes") }
        let lowered = name.lowercased()
        if lowered.hasPrefix("outbound_.") || lowered.hasPrefix("inbound_.") {
            // direction_.port_.subset_.host — the host may itself contain dots, so split
            // only the first three parts.
            let parts = lowered.split(separator: ".", maxSplits: 3, omittingEmptySubsequences: false)
            guard parts.count == 4 else { throw ServerNameError(name, "has fewer than four parts in 'outbound_.<port>_.<subset>_.<host>'") }
            guard parts[0] == "outbound_" else { throw ServerNameError(name, "is an inbound cluster name; a gateway serves outbound_ names") }
            guard parts[1].hasSuffix("_"), let port = Int(parts[1].dropLast()), (1...65_535).contains(port) else {
                throw ServerNameError(name, "port '\(parts[1].dropLast())' is not a number from 1 to 65535")
            }
            guard parts[2].hasSuffix("_") else { throw ServerNameError(name, "subset part '\(parts[2])' must end with '_'") }
            let subset = parts[2].dropLast()
            let host = String(parts[3])
            try Self.validateHost(host, in: name)
            self.init(host: host, port: port, subset: subset.isEmpty ? nil : String(subset))
        } else {
            try Self.validateHost(lowered, in: name)
            self.init(host: lowered, port: nil, subset: nil)
        }
    }

    /// RFC 1035 labels, loosely: non-empty, at most 63 bytes, letters, digits, '-' and '_'.
    private static func validateHost(_ host: String, in name: String) throws(ServerNameError) {
        guard !host.isEmpty else { throw ServerNameError(name, "has an empty host") }
        for label in host.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty, label.utf8.count <= 63 else {
                throw ServerNameError(name, "host '\(host)' has an empty or over-long label")
            }
            guard label.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || $0 == "_" }) else {
                throw ServerNameError(name, "host '\(host)' contains a character that is not allowed in a DNS name")
            }
        }
    }
}

package struct ServerNameError: Error, Sendable, Equatable, CustomStringConvertible {
    package var name: String
    package var reason: String
    init(_ name: String, _ reason: String) { self.name = name; self.reason = reason }
    package var description: String { "server name '\(name)' \(reason)" }
}
