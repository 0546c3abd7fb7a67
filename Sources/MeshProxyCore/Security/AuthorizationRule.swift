import Foundation

/// One AuthorizationPolicy rule, compiled when the configuration loads: every pattern split
/// into its kind (exact, prefix, suffix, any), principals with their `spiffe://`, IP blocks
/// parsed, ports as numbers, `when` keys resolved. A request is then matched without parsing
/// or allocating, which matters with many rules: each request walks all of them until one holds.
package struct AuthorizationRule: Sendable, Equatable {
    /// `from`: any holds (nil: no `from`, or an entry without a source, which holds).
    var sources: [Source]?
    /// `to`: any holds (nil: no `to`, or an entry without an operation).
    var operations: [Operation]?
    /// `when`: every one holds.
    var conditions: [Condition]
    /// It names an attribute only HTTP has (request principals, hosts, methods, paths,
    /// headers, JWT claims).
    var usesHTTPOnly: Bool

    init(_ rule: AuthorizationPolicy.Rule, namespace: String) {
        // An entry without a source (operation) makes the whole `from` (`to`) hold: no list to
        // walk, and the rest are plain values, matched in place without copying an optional out.
        sources = rule.from.flatMap { entries in
            entries.contains { $0.source == nil } ? nil : entries.compactMap { $0.source.map { Source($0, namespace: namespace) } }
        }
        operations = rule.to.flatMap { entries in entries.contains { $0.operation == nil } ? nil : entries.compactMap { $0.operation.map(Operation.init) } }
        conditions = (rule.when ?? []).map(Condition.init)
        usesHTTPOnly = (rule.from ?? []).contains { $0.source.map { $0.requestPrincipals != nil || $0.notRequestPrincipals != nil } ?? false }
            || (rule.to ?? []).contains { from in
                from.operation.map { $0.hosts != nil || $0.notHosts != nil || $0.methods != nil || $0.notMethods != nil || $0.paths != nil || $0.notPaths != nil } ?? false
            }
            || conditions.contains(where: \.isHTTPOnly)
    }

    /// Any `from`, and any `to`, and every `when`. On a TCP connection an HTTP-only attribute
    /// drops an ALLOW rule (narrower) but only itself from a DENY or AUDIT rule (wider), as
    /// istiod's `checkError` does. `atGateway`: the policy selected the gateway, so ports are
    /// its listener's.
    func holds(for request: AuthorizationRequest, action: AuthorizationPolicy.Action, atGateway: Bool) -> Bool {
        if request.http == nil, action == .allow, usesHTTPOnly { return false }
        let port = atGateway ? request.listenerPort : request.servicePort
        // By index: the entries are matched where they are, not copied out (retaining every
        // pattern list in them) once per rule per request.
        if let sources, !Self.any(sources, { $0.matches(request) }) { return false }
        if let operations, !Self.any(operations, { $0.matches(request, port: port) }) { return false }
        for index in conditions.indices where !conditions[index].matches(request, port: port) { return false }
        return true
    }

    fileprivate static func any<Element>(_ elements: [Element], _ holds: (borrowing Element) -> Bool) -> Bool {
        for index in elements.indices where holds(elements[index]) { return true }
        return false
    }

    /// A field's `values` (any holds) and `notValues` (none holds); absent: no condition.
    struct Field<Pattern: Sendable & Equatable>: Sendable, Equatable {
        var values: [Pattern]?
        var notValues: [Pattern]?

        init(_ values: [Pattern]?, _ notValues: [Pattern]?) { self.values = values; self.notValues = notValues }

        init(_ values: [String]?, _ notValues: [String]?, _ compile: (String) -> Pattern?) {
            self.values = values.map { $0.compactMap(compile) }
            self.notValues = notValues.map { $0.compactMap(compile) }
        }

        func check(_ holds: (borrowing Pattern) -> Bool) -> Bool {
            if let values, !AuthorizationRule.any(values, holds) { return false }
            if let notValues, AuthorizationRule.any(notValues, holds) { return false }
            return true
        }
    }

    /// A class, immutable: a request walks every rule's sources, and reading one out of its
    /// list then costs one reference count, not one per pattern list in it (twelve).
    final class Source: Sendable, Equatable {
        /// With `spiffe://` in front unless written `*…` (then matched against the whole ID).
        let principals: Field<StringPattern>
        /// `iss/sub` split at the last `/`; `*`: both present.
        let requestPrincipals: Field<RequestPrincipalPattern>
        let namespaces: Field<StringPattern>
        let serviceAccounts: Field<ServiceAccount>
        let ipBlocks: Field<IPBlock>
        let remoteIpBlocks: Field<IPBlock>

        static func == (a: Source, b: Source) -> Bool {
            a.principals == b.principals && a.requestPrincipals == b.requestPrincipals && a.namespaces == b.namespaces
                && a.serviceAccounts == b.serviceAccounts && a.ipBlocks == b.ipBlocks && a.remoteIpBlocks == b.remoteIpBlocks
        }

        struct ServiceAccount: Sendable, Equatable {
            var namespace: String
            var name: String
        }

        struct RequestPrincipalPattern: Sendable, Equatable {
            /// Nil: `*`, any token with an issuer and a subject.
            var issuer: StringPattern?
            var subject: StringPattern?
        }

        init(_ source: AuthorizationPolicy.Source, namespace: String) {
            principals = Field(source.principals, source.notPrincipals) { StringPattern($0.hasPrefix("*") ? $0 : "spiffe://" + $0) }
            requestPrincipals = Field(source.requestPrincipals, source.notRequestPrincipals) { pattern in
                if pattern == "*" { return RequestPrincipalPattern(issuer: nil, subject: nil) }
                // Without a `/` nothing can match; kept so that `values` still requires a match.
                guard let slash = pattern.lastIndex(of: "/") else { return RequestPrincipalPattern(issuer: .never, subject: .never) }
                return RequestPrincipalPattern(issuer: StringPattern(pattern[..<slash]), subject: StringPattern(pattern[pattern.index(after: slash)...]))
            }
            namespaces = Field(source.namespaces, source.notNamespaces) { StringPattern($0) }
            serviceAccounts = Field(source.serviceAccounts, source.notServiceAccounts) { account in
                let split = account.split(separator: "/", maxSplits: 1).map(String.init)
                return split.count == 2 ? ServiceAccount(namespace: split[0], name: split[1]) : ServiceAccount(namespace: namespace, name: account)
            }
            // An address that does not parse matches nothing: left out.
            ipBlocks = Field(source.ipBlocks, source.notIpBlocks) { IPBlock($0) }
            remoteIpBlocks = Field(source.remoteIpBlocks, source.notRemoteIpBlocks) { IPBlock($0) }
        }

        func matches(_ request: AuthorizationRequest) -> Bool {
            let principal = request.principal
            return principals.check { pattern in principal.map(pattern.matches) ?? false }
                // On TCP an HTTP-only field is no condition (reached only for DENY and AUDIT rules).
                && (request.http == nil || requestPrincipals.check { pattern in
                    guard let token = request.requestPrincipal else { return false }
                    guard let issuer = pattern.issuer, let subject = pattern.subject else { return !token.issuer.isEmpty && !token.subject.isEmpty }
                    return issuer.matches(token.issuer) && subject.matches(token.subject)
                })
                && namespaces.check { pattern in SpiffeParts(principal).map { pattern.matches($0.namespace) } ?? false }
                && serviceAccounts.check { account in
                    SpiffeParts(principal).map { $0.namespace.utf8.elementsEqual(account.namespace.utf8) && $0.serviceAccount.utf8.elementsEqual(account.name.utf8) } ?? false
                }
                && ipBlocks.check { $0.contains(request.sourceIP) }
                && remoteIpBlocks.check { $0.contains(request.remoteIP) }
        }
    }

    /// A class, immutable, for the reason `Source` is one.
    final class Operation: Sendable, Equatable {
        /// Lower-cased, matched ignoring case.
        let hosts: Field<StringPattern>
        let ports: Field<Int>
        let methods: Field<StringPattern>
        let paths: Field<PathPattern>

        static func == (a: Operation, b: Operation) -> Bool {
            a.hosts == b.hosts && a.ports == b.ports && a.methods == b.methods && a.paths == b.paths
        }

        init(_ operation: AuthorizationPolicy.Operation) {
            hosts = Field(operation.hosts, operation.notHosts) { StringPattern($0.lowercased()) }
            ports = Field(operation.ports, operation.notPorts) { Int($0) }
            methods = Field(operation.methods, operation.notMethods) { StringPattern($0) }
            paths = Field(operation.paths, operation.notPaths) { PathPattern($0) }
        }

        func matches(_ request: AuthorizationRequest, port: Int) -> Bool {
            guard ports.check({ $0 == port }) else { return false }
            // On TCP the HTTP-only fields are no condition (reached only for DENY and AUDIT rules).
            guard let http = request.http else { return true }
            return hosts.check { $0.matchesIgnoringCase(http.host) }
                && methods.check { $0.matches(http.method) }
                && paths.check { $0.matches(http.path) }
        }
    }

    /// A `when` condition with its key resolved.
    struct Condition: Sendable, Equatable {
        enum Key: Sendable, Equatable {
            case sourceIP, remoteIP, destinationIP, destinationPort, sni
            case sourcePrincipal, sourceNamespace, sourceServiceAccount, sourceTrustDomain
            case header(String)
            case authPrincipal, audiences, presenter
            case claim([String])
            /// Filter metadata and keys EastWest does not know: nothing holds.
            case unknown
        }
        var key: Key
        /// For the address keys.
        var blocks = Field<IPBlock>(nil, nil)
        /// For `destination.port`.
        var ports = Field<Int>(nil, nil)
        /// For the rest.
        var strings = Field<StringPattern>(nil, nil)

        /// `request.headers[…]` and `request.auth.…` (malformed ones too, as istiod reads them).
        var isHTTPOnly: Bool

        init(_ condition: AuthorizationPolicy.Condition) {
            let name = condition.key
            isHTTPOnly = name.hasPrefix("request.headers[") || name.hasPrefix("request.auth.")
            switch name {
            case "source.ip": key = .sourceIP
            case "remote.ip": key = .remoteIP
            case "destination.ip": key = .destinationIP
            case "destination.port": key = .destinationPort
            case "connection.sni": key = .sni
            case "source.principal": key = .sourcePrincipal
            case "source.namespace": key = .sourceNamespace
            case "source.serviceAccount": key = .sourceServiceAccount
            case "source.trustDomain": key = .sourceTrustDomain
            case _ where name.hasPrefix("request.headers[") && name.hasSuffix("]"):
                key = .header(String(name.dropFirst("request.headers[".count).dropLast()))
            case "request.auth.principal": key = .authPrincipal
            case "request.auth.audiences": key = .audiences
            case "request.auth.presenter": key = .presenter
            case _ where name.hasPrefix("request.auth.claims[") && name.hasSuffix("]"):
                // `[a][b]`: nested claims.
                key = .claim(name.dropFirst("request.auth.claims[".count).dropLast().components(separatedBy: "]["))
            default: key = .unknown
            }
            switch key {
            case .sourceIP, .remoteIP, .destinationIP: blocks = Field(condition.values, condition.notValues) { IPBlock($0) }
            case .destinationPort: ports = Field(condition.values, condition.notValues) { Int($0) }
            case .unknown:
                // Nothing holds: `values` never matches, `notValues` never excludes.
                strings = Field(condition.values.map { $0.map { _ in .never } }, condition.notValues.map { $0.map { _ in .never } })
            default: strings = Field(condition.values, condition.notValues) { StringPattern($0) }
            }
        }

        func matches(_ request: AuthorizationRequest, port: Int) -> Bool {
            if request.http == nil, isHTTPOnly { return true }
            let principal = request.principal
            switch key {
            case .sourceIP: return blocks.check { $0.contains(request.sourceIP) }
            case .remoteIP: return blocks.check { $0.contains(request.remoteIP) }
            case .destinationIP: return blocks.check { $0.contains(request.destinationIP) }
            case .destinationPort: return ports.check { $0 == port }
            case .sni: return strings.check { $0.matches(request.serverName) }
            case .sourcePrincipal: return strings.check { pattern in principal.map { pattern.matches($0.dropFirst("spiffe://".count)) } ?? false }
            case .sourceNamespace: return strings.check { pattern in SpiffeParts(principal).map { pattern.matches($0.namespace) } ?? false }
            case .sourceServiceAccount:
                return strings.check { pattern in SpiffeParts(principal).map { pattern.matches("\($0.namespace)/\($0.serviceAccount)") } ?? false }
            case .sourceTrustDomain: return strings.check { pattern in SpiffeParts(principal).map { pattern.matches($0.trustDomain) } ?? false }
            case .header(let name):
                let joined = request.http?.headers[name].joined(separator: ",")
                return strings.check { pattern in joined.map(pattern.matches) ?? false }
            case .authPrincipal: return strings.check { pattern in request.requestPrincipal.map { pattern.matches($0.principal) } ?? false }
            case .audiences: return strings.check { pattern in request.requestPrincipal?.claims["aud"]?.strings.contains(where: pattern.matches) ?? false }
            case .presenter: return strings.check { pattern in request.requestPrincipal?.claims["azp"]?.strings.contains(where: pattern.matches) ?? false }
            case .claim(let path):
                // A list claim holds when any of its strings does.
                let claim = request.requestPrincipal.flatMap { JWTAuthenticator.claim(path, in: $0.claims) }?.strings ?? []
                return strings.check { pattern in claim.contains(where: pattern.matches) }
            case .unknown: return strings.check { _ in false }
            }
        }
    }
}

/// Istio's string match, its kind decided once: `*` any non-empty value, `x*` a prefix, `*x` a
/// suffix, else exact. Compared byte for byte, as Envoy's string matcher does.
struct StringPattern: Sendable, Equatable {
    enum Kind: Sendable, Equatable { case any, prefix, suffix, exact, never }
    var kind: Kind
    var text: String

    /// Matches nothing (a pattern that cannot apply).
    static let never = StringPattern(kind: .never, text: "")

    private init(kind: Kind, text: String) { self.kind = kind; self.text = text }

    init(_ pattern: some StringProtocol) {
        if pattern == "*" { self.init(kind: .any, text: "") }
        else if pattern.hasSuffix("*") { self.init(kind: .prefix, text: String(pattern.dropLast())) }
        else if pattern.hasPrefix("*") { self.init(kind: .suffix, text: String(pattern.dropFirst())) }
        else { self.init(kind: .exact, text: String(pattern)) }
    }

    func matches(_ value: some StringProtocol) -> Bool {
        let count = value.utf8.count, length = text.utf8.count
        switch kind {
        case .any: return count > 0
        case .prefix: return count >= length && UTF8Bytes.equal(value, at: 0, text)
        case .suffix: return count >= length && UTF8Bytes.equal(value, at: count - length, text)
        case .exact: return count == length && UTF8Bytes.equal(value, at: 0, text)
        case .never: return false
        }
    }

    /// With `text` lower-cased: ASCII letters of `value` compared in either case.
    func matchesIgnoringCase(_ value: some StringProtocol) -> Bool {
        let bytes = value.utf8.lazy.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }, text = self.text.utf8
        switch kind {
        case .any: return !value.utf8.isEmpty
        case .prefix: return bytes.starts(with: text)
        case .suffix:
            let count = value.utf8.count
            return count >= text.count && bytes.dropFirst(count - text.count).elementsEqual(text)
        case .exact: return value.utf8.count == text.count && bytes.elementsEqual(text)
        case .never: return false
        }
    }
}

/// `paths`: the string match, or an Envoy URI template when the pattern has `{*}` (one segment)
/// or `{**}` (any number, last only).
enum PathPattern: Sendable, Equatable {
    case string(StringPattern)
    case template([Segment])

    enum Segment: Sendable, Equatable {
        case literal(String)
        case one
        case rest
    }

    init(_ pattern: String) {
        guard pattern.contains("{*") else { self = .string(StringPattern(pattern)); return }
        self = .template(pattern.split(separator: "/", omittingEmptySubsequences: false).map { part in
            part == "{**}" ? .rest : part == "{*}" ? .one : .literal(String(part))
        })
    }

    func matches(_ path: String) -> Bool {
        switch self {
        case .string(let pattern): return pattern.matches(path)
        case .template(let parts):
            // Walks the path's `/`-separated segments (empty ones included) without splitting it.
            var remaining: Substring.UTF8View? = path.utf8[...]
            for (index, part) in parts.enumerated() {
                // Every earlier part took one segment, so `{**}` has the segments it needs.
                if part == .rest { return index == parts.count - 1 }
                guard let rest = remaining else { return false }
                let segment: Substring.UTF8View
                if let slash = rest.firstIndex(of: UInt8(ascii: "/")) {
                    segment = rest[..<slash]
                    remaining = rest[rest.index(after: slash)...]
                } else {
                    segment = rest
                    remaining = nil
                }
                switch part {
                case .one: if segment.isEmpty { return false }
                case .literal(let text): if !segment.elementsEqual(text.utf8) { return false }
                case .rest: break
                }
            }
            return remaining == nil
        }
    }
}

/// The trust domain, namespace and service account of a SPIFFE ID `spiffe://td/ns/N/sa/S`, as
/// slices of it.
struct SpiffeParts {
    var trustDomain: Substring
    var namespace: Substring
    var serviceAccount: Substring

    init?(_ principal: String?) {
        guard let principal, principal.hasPrefix("spiffe://") else { return nil }
        // `/`-separated segments, empty ones included; nil past the last.
        var rest: Substring? = principal.dropFirst("spiffe://".count)
        func segment() -> Substring? {
            guard let current = rest else { return nil }
            guard let slash = current.firstIndex(of: "/") else { rest = nil; return current }
            rest = current[current.index(after: slash)...]
            return current[..<slash]
        }
        guard let domain = segment(), segment() == "ns", let namespace = segment(), segment() == "sa", let account = segment() else { return nil }
        trustDomain = domain; self.namespace = namespace; serviceAccount = account
    }
}

/// An `ipBlocks` entry: an address or a CIDR range, IPv4 or IPv6.
struct IPBlock: Sendable, Equatable {
    private var network: [UInt8]
    private var prefix: Int

    init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1)
        guard let address = parts.first.flatMap({ Self.withAddress(of: String($0)) { $0.map(Array.init) } }) else { return nil }
        network = address
        prefix = parts.count == 2 ? (Int(parts[1]) ?? -1) : address.count * 8
        guard (0...(address.count * 8)).contains(prefix) else { return nil }
    }

    /// Whether the address `text` is in the block; parsed on the stack.
    func contains(_ text: String) -> Bool {
        Self.withAddress(of: text) { address in
            guard let address, address.count == network.count else { return false }
            var bits = prefix
            for (a, b) in zip(address, network) where bits > 0 {
                let mask: UInt8 = bits >= 8 ? 0xFF : ~(0xFF >> UInt8(bits))
                if a & mask != b & mask { return false }
                bits -= 8
            }
            return true
        }
    }

    /// `text` with its host bits cleared, as `address/length` (the length by family): Envoy's
    /// `masked_remote_address` descriptor value. nil: not an address.
    static func masked(_ text: String, v4PrefixLength: Int, v6PrefixLength: Int) -> String? {
        let isV6 = text.utf8.contains(UInt8(ascii: ":"))
        let length = isV6 ? v6PrefixLength : v4PrefixLength
        let bytes: [UInt8]? = withAddress(of: text) { address in
            guard let address else { return nil }
            var bits = length
            return address.map { byte in
                defer { bits -= 8 }
                return bits >= 8 ? byte : bits <= 0 ? 0 : byte & ~(0xFF >> UInt8(bits))
            }
        }
        guard let bytes else { return nil }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let written = bytes.withUnsafeBytes { raw in inet_ntop(isV6 ? AF_INET6 : AF_INET, raw.baseAddress, &buffer, socklen_t(buffer.count)) }
        guard written != nil else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) + "/\(length)"
    }

    private static func withAddress<R>(of text: String, _ body: (UnsafeRawBufferPointer?) -> R) -> R {
        if text.utf8.contains(UInt8(ascii: ":")) {
            var storage = in6_addr()
            guard inet_pton(AF_INET6, text, &storage) == 1 else { return body(nil) }
            return withUnsafeBytes(of: storage) { body($0) }
        }
        var storage = in_addr()
        guard inet_pton(AF_INET, text, &storage) == 1 else { return body(nil) }
        return withUnsafeBytes(of: storage) { body($0) }
    }
}

/// Byte comparisons of strings through `memcmp` when both are contiguous UTF-8 (native strings
/// and their slices always are): the generic collection comparison costs a call per byte.
enum UTF8Bytes {
    /// Whether `value`'s bytes from `offset` start with `text`'s (the caller checked the lengths).
    static func equal(_ value: some StringProtocol, at offset: Int, _ text: some StringProtocol) -> Bool {
        let fast = value.utf8.withContiguousStorageIfAvailable { bytes in
            text.utf8.withContiguousStorageIfAvailable { other in
                offset + other.count <= bytes.count && (other.isEmpty || memcmp(bytes.baseAddress! + offset, other.baseAddress!, other.count) == 0)
            }
        }
        if let fast, let result = fast { return result }
        return value.utf8.dropFirst(offset).starts(with: text.utf8)
    }
}
