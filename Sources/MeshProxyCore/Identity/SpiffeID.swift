/// A SPIFFE ID, `spiffe://<trust-domain>/<path>`, as carried in the URI SAN of every mesh
/// certificate. Istio workloads use the path `/ns/<namespace>/sa/<service-account>`.
///
/// Parsing follows the SPIFFE ID specification (SPIFFE-ID.md §2): lower-case scheme, a trust
/// domain of `[a-z0-9.-_]` with no port or user info, path segments of `[A-Za-z0-9.-_]` that are
/// neither empty nor `.`/`..`, and no query or fragment.
package struct SpiffeID: Hashable, Sendable, CustomStringConvertible {
    package let trustDomain: String
    /// Everything after the trust domain, starting with `/`, or empty for the trust domain's own ID.
    package let path: String

    package var description: String { "spiffe://\(trustDomain)\(path)" }

    /// `ns` of an Istio identity, nil when the path is not `/ns/<ns>/sa/<sa>`.
    package var namespace: String? { istioParts?.namespace }
    /// `sa` of an Istio identity, nil when the path is not `/ns/<ns>/sa/<sa>`.
    package var serviceAccount: String? { istioParts?.serviceAccount }

    private var istioParts: (namespace: String, serviceAccount: String)? {
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard segments.count == 4, segments[segments.startIndex] == "ns",
              segments[segments.startIndex + 2] == "sa" else { return nil }
        return (String(segments[segments.startIndex + 1]), String(segments[segments.startIndex + 3]))
    }

    /// The Istio identity of a workload: `spiffe://<td>/ns/<namespace>/sa/<serviceAccount>`.
    package init(trustDomain: String, namespace: String, serviceAccount: String) throws(SpiffeIDError) {
        try self.init(parsing: "spiffe://\(trustDomain)/ns/\(namespace)/sa/\(serviceAccount)")
    }

    package init(parsing text: String) throws(SpiffeIDError) {
        let scheme = "spiffe://"
        guard text.hasPrefix(scheme) else {
            throw SpiffeIDError(text, "must start with 'spiffe://'")
        }
        let rest = text.dropFirst(scheme.count)
        guard !rest.contains("?"), !rest.contains("#") else {
            throw SpiffeIDError(text, "must not contain a query or fragment")
        }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let domain = rest[..<slash]
        guard !domain.isEmpty else { throw SpiffeIDError(text, "trust domain is empty") }
        guard domain.unicodeScalars.allSatisfy(Self.isTrustDomainCharacter) else {
            throw SpiffeIDError(text, "trust domain '\(domain)' may only contain a-z, 0-9, '.', '-' and '_' (no port, no user info, lower case)")
        }
        let path = rest[slash...]
        if !path.isEmpty {
            for segment in path.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
                guard !segment.isEmpty else { throw SpiffeIDError(text, "path has an empty segment") }
                guard segment != ".", segment != ".." else {
                    throw SpiffeIDError(text, "path segment '\(segment)' is not allowed")
                }
                guard segment.unicodeScalars.allSatisfy(Self.isPathCharacter) else {
                    throw SpiffeIDError(text, "path segment '\(segment)' may only contain letters, digits, '.', '-' and '_'")
                }
            }
        }
        self.trustDomain = String(domain)
        self.path = String(path)
    }

    private static func isTrustDomainCharacter(_ c: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(c) || ("0"..."9").contains(c) || c == "." || c == "-" || c == "_"
    }

    private static func isPathCharacter(_ c: Unicode.Scalar) -> Bool {
        isTrustDomainCharacter(c) || ("A"..."Z").contains(c)
    }
}

/// Why a string is not a SPIFFE ID. `description` is what a user reads.
package struct SpiffeIDError: Error, Sendable, Equatable, CustomStringConvertible {
    package var text: String
    package var reason: String
    init(_ text: String, _ reason: String) { self.text = text; self.reason = reason }
    package var description: String { "'\(text)' is not a SPIFFE ID: \(reason)" }
}
