import Crypto
import CryptoExtras
import Foundation
import NIOHTTP1
import Synchronization

/// A JWKS document's public keys, as swift-crypto keys (RSA for RS*/PS*, P-256/P-384 for
/// ES256/ES384, Ed25519 for EdDSA); keys of other types are left out.
package struct JWKSet: Sendable {
    package struct Key: Sendable {
        package enum Material: Sendable {
            case rsa(_RSA.Signing.PublicKey)
            case p256(P256.Signing.PublicKey)
            case p384(P384.Signing.PublicKey)
            case ed25519(Curve25519.Signing.PublicKey)
        }
        package var kid: String?
        package var alg: String?
        package var material: Material
    }

    package var keys: [Key]

    package struct Problem: Error, Sendable {
        package var message: String
        /// An `http(s)://` URI: valid, fetched by the gateway when it runs (not by the loader).
        package var fetchable = false

        package init(message: String, fetchable: Bool = false) {
            self.message = message
            self.fetchable = fetchable
        }
    }

    /// The rule's keys: inline `jwks`, or a `file://` `jwksUri` (read now).
    static func source(of rule: RequestAuthentication.JWTRule, base: URL) -> Result<JWKSet, Problem> {
        if let jwks = rule.jwks { return parse(Data(jwks.utf8)) }
        guard let uri = rule.jwksUri else { return .failure(Problem(message: "a jwtRule needs jwks or jwksUri (istiod's OpenID discovery is not done here)", fetchable: true)) }
        guard uri.hasPrefix("file://") else { return .failure(Problem(message: "jwksUri \(uri) is fetched when the gateway runs", fetchable: true)) }
        let path = String(uri.dropFirst("file://".count))
        let url = path.hasPrefix("/") ? URL(fileURLWithPath: path) : base.appendingPathComponent(path)
        guard let data = try? Data(contentsOf: url) else { return .failure(Problem(message: "cannot read the JWKS at \(url.path)")) }
        return parse(data)
    }

    package static func parse(_ data: Data) -> Result<JWKSet, Problem> {
        guard let document = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any], let keys = document["keys"] as? [[String: Any]] else {
            return .failure(Problem(message: "not a JWKS document (a JSON object with \"keys\")"))
        }
        return .success(JWKSet(keys: keys.compactMap(key)))
    }

    private static func key(_ jwk: [String: Any]) -> Key? {
        func bytes(_ name: String) -> Data? { (jwk[name] as? String).flatMap(JWT.base64URLDecoded) }
        let material: Key.Material
        switch (jwk["kty"] as? String, jwk["crv"] as? String) {
        case ("RSA", _):
            guard let n = bytes("n"), let e = bytes("e"), let key = try? _RSA.Signing.PublicKey(n: n, e: e) else { return nil }
            material = .rsa(key)
        case ("EC", "P-256"):
            guard let x = bytes("x"), let y = bytes("y"), let key = try? P256.Signing.PublicKey(rawRepresentation: x + y) else { return nil }
            material = .p256(key)
        case ("EC", "P-384"):
            guard let x = bytes("x"), let y = bytes("y"), let key = try? P384.Signing.PublicKey(rawRepresentation: x + y) else { return nil }
            material = .p384(key)
        case ("OKP", "Ed25519"):
            guard let x = bytes("x"), let key = try? Curve25519.Signing.PublicKey(rawRepresentation: x) else { return nil }
            material = .ed25519(key)
        default:
            return nil
        }
        return Key(kid: jwk["kid"] as? String, alg: jwk["alg"] as? String, material: material)
    }
}

/// One JWT, split and decoded (not yet trusted). A class, immutable: a verified token is kept
/// by the gateway's cache and by each connection that sent it, and handed out per request
/// for one reference count, not one per field.
package final class JWT: Sendable {
    package let alg: String
    package let kid: String?
    /// The payload's claims as JSON values.
    package let claims: [String: ConfigValue]
    package let payload: Data
    /// The payload as the token carries it (base64url JSON), passed on as it is.
    package let encodedPayload: String
    package let signingInput: Data
    package let signature: Data
    /// The registered claims every request checks, read once when the token is parsed (a
    /// cached token is then checked without a dictionary lookup per claim).
    package let issuer: String?
    package let subject: String
    package let notBefore: Double?
    package let expires: Double?
    package let audiences: [String]
    /// `audiences` without scheme or trailing `/`, as Envoy compares them: made once per token.
    package let plainAudiences: [String]
    /// `alg` is one of `algorithms`: looked up once per token.
    let hasSupportedAlgorithm: Bool

    package init?(_ token: String) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let header = Self.base64URLDecoded(String(parts[0])), let payload = Self.base64URLDecoded(String(parts[1])),
              let signature = Self.base64URLDecoded(String(parts[2])),
              let headerJSON = try? JSONDecoder().decode([String: ConfigValue].self, from: header),
              let claims = try? JSONDecoder().decode([String: ConfigValue].self, from: payload) else { return nil }
        alg = headerJSON["alg"]?.string ?? ""
        hasSupportedAlgorithm = Self.algorithms.contains(alg)
        kid = headerJSON["kid"]?.string
        self.claims = claims
        self.payload = payload
        encodedPayload = String(parts[1])
        signingInput = Data("\(parts[0]).\(parts[1])".utf8)
        self.signature = signature
        if case .string(let iss)? = claims["iss"] { issuer = iss } else { issuer = nil }
        if case .string(let sub)? = claims["sub"] { subject = sub } else { subject = "" }
        if case .number(let nbf)? = claims["nbf"] { notBefore = nbf } else { notBefore = nil }
        if case .number(let exp)? = claims["exp"] { expires = exp } else { expires = nil }
        let audiences = claims["aud"]?.strings ?? []
        self.audiences = audiences
        plainAudiences = audiences.map(JWTAuthenticator.plainAudience)
    }

    package static func base64URLDecoded(_ text: String) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64)
    }

    package static func base64URLEncoded(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// Whether `key` signed it with the header's `alg`.
    func isSigned(by key: JWKSet.Key) -> Bool {
        switch (alg, key.material) {
        case ("RS256", .rsa(let rsa)): rsaValid(rsa, SHA256.hash(data: signingInput), .insecurePKCS1v1_5)
        case ("RS384", .rsa(let rsa)): rsaValid(rsa, SHA384.hash(data: signingInput), .insecurePKCS1v1_5)
        case ("RS512", .rsa(let rsa)): rsaValid(rsa, SHA512.hash(data: signingInput), .insecurePKCS1v1_5)
        case ("PS256", .rsa(let rsa)): rsaValid(rsa, SHA256.hash(data: signingInput), .PSS)
        case ("PS384", .rsa(let rsa)): rsaValid(rsa, SHA384.hash(data: signingInput), .PSS)
        case ("PS512", .rsa(let rsa)): rsaValid(rsa, SHA512.hash(data: signingInput), .PSS)
        case ("ES256", .p256(let ec)):
            (try? P256.Signing.ECDSASignature(rawRepresentation: signature)).map { ec.isValidSignature($0, for: SHA256.hash(data: signingInput)) } ?? false
        case ("ES384", .p384(let ec)):
            (try? P384.Signing.ECDSASignature(rawRepresentation: signature)).map { ec.isValidSignature($0, for: SHA384.hash(data: signingInput)) } ?? false
        case ("EdDSA", .ed25519(let ed)): ed.isValidSignature(signature, for: signingInput)
        default: false
        }
    }

    private func rsaValid(_ key: _RSA.Signing.PublicKey, _ digest: some Digest, _ padding: _RSA.Signing.Padding) -> Bool {
        key.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: signature), for: digest, padding: padding)
    }

    static let algorithms: Set<String> = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
}

extension ConfigValue {
    /// As a header value (`outputClaimToHeaders`: strings, numbers, booleans).
    var headerValue: String? {
        switch self {
        case .string(let value): value
        case .number(let value): value == value.rounded() ? String(Int(value)) : String(value)
        case .bool(let value): String(value)
        case .list, .object, .null: nil
        }
    }

    /// The strings an AuthorizationPolicy matches: a string, or each string of a list.
    var strings: [String] {
        switch self {
        case .string(let value): [value]
        case .list(let values): values.compactMap { if case .string(let s) = $0 { s } else { nil } }
        default: []
        }
    }
}

/// What a verified token says, for AuthorizationPolicy (`requestPrincipals`, `request.auth.*`).
package struct RequestPrincipal: Sendable, Equatable {
    package var issuer: String
    package var subject: String
    package var claims: [String: ConfigValue]

    /// `request.auth.principal`: `iss/sub`.
    package var principal: String { "\(issuer)/\(subject)" }

    package init(issuer: String, subject: String, claims: [String: ConfigValue]) {
        self.issuer = issuer; self.subject = subject; self.claims = claims
    }

    /// The same principal and claims, however they were carried.
    package static func == (a: RequestPrincipal, b: RequestPrincipal) -> Bool {
        a.issuer == b.issuer && a.subject == b.subject && a.claims == b.claims
    }

    /// The token's own payload segment, when it came from a token (not compared).
    package var encodedPayload: String?

    /// The claims as base64url JSON, as the entry gateway hands them to a peer gateway: the
    /// token's own segment when there is one, so nothing is encoded per request.
    package var payload: String {
        encodedPayload ?? JWT.base64URLEncoded((try? JSONEncoder().encode(claims)) ?? Data("{}".utf8))
    }

    /// What an entry gateway verified, read back at a peer gateway.
    package init?(payload: String) {
        guard let data = JWT.base64URLDecoded(payload), let claims = try? JSONDecoder().decode([String: ConfigValue].self, from: data),
              let issuer = claims["iss"]?.string else { return nil }
        self.init(issuer: issuer, subject: claims["sub"]?.string ?? "", claims: claims)
    }
}

/// Envoy's `jwt_authn` with the requirement Istio builds from RequestAuthentication rules: a
/// request without a token passes (with no principal); a token must come from a configured
/// issuer and verify — checked in Envoy's order: parse, issuer, time (60 s skew), audiences,
/// signature. Pure apart from `now`.
/// A `jwksUri` fetched over the network (as istiod does before handing the keys to Envoy):
/// the keys last fetched, shared by every route whose rules name the URI. None until the first
/// fetch succeeds, and tokens are rejected meanwhile (fail closed, as Envoy and istiod do); a
/// later failed fetch keeps the keys it had.
package final class RemoteJWKS: Sendable, Equatable {
    package let uri: String

    /// Configuration compares by URI; the keys are state.
    package static func == (a: RemoteJWKS, b: RemoteJWKS) -> Bool { a.uri == b.uri }
    /// The keys, and how many times they were replaced (a token verified under older keys is
    /// verified again).
    private let keys = Mutex<(set: JWKSet?, generation: Int)>((nil, 0))

    package init(uri: String) { self.uri = uri }

    package var current: JWKSet? { keys.withLock { $0.set } }
    package var generation: Int { keys.withLock { $0.generation } }

    package func update(_ set: JWKSet) { keys.withLock { $0 = (set, $0.generation + 1) } }

    /// The URIs `policies` fetch over the network, each once.
    package static func uris(in policies: [RequestAuthentication]) -> [String] {
        var seen = Set<String>()
        return policies.flatMap { $0.jwtRules ?? [] }.compactMap(\.jwksUri)
            .filter { ($0.hasPrefix("https://") || $0.hasPrefix("http://")) && seen.insert($0).inserted }
    }
}

/// Tokens whose signature checked out, by their text, with the keys that checked it: a client
/// sending the same token on every request costs one signature check (as Envoy's JWT cache),
/// while issuer, time and audience are checked every time. Bounded; when full it starts over.
package final class VerifiedTokens: Sendable, Equatable {
    /// A cache is state, not configuration: any two compare equal.
    package static func == (a: VerifiedTokens, b: VerifiedTokens) -> Bool { true }

    package struct KeySource: Sendable, Equatable {
        var name: String
        var generation: Int
    }

    private struct Entry: Sendable {
        var jwt: JWT
        var source: KeySource
    }

    private let entries = Mutex<[String: Entry]>([:])
    package let capacity: Int

    package init(capacity: Int = 1024) { self.capacity = capacity }

    func lookup(_ token: String) -> (jwt: JWT, source: KeySource)? {
        entries.withLock { $0[token].map { ($0.jwt, $0.source) } }
    }

    func store(_ token: String, jwt: JWT, source: KeySource) {
        entries.withLock { entries in
            if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
            entries[token] = Entry(jwt: jwt, source: source)
        }
    }

    package var count: Int { entries.withLock { $0.count } }
}

package struct JWTAuthenticator: Sendable {
    package struct Provider: Sendable {
        package var rule: RequestAuthentication.JWTRule
        package var keys: JWKSet
        /// A jwksUri fetched over the network: its keys as last fetched replace `keys`.
        package var remote: RemoteJWKS?
        /// `audiences` without scheme or trailing `/`, as Envoy compares them; nil: any. A list:
        /// a few short strings compare faster than they hash.
        var allowedAudiences: [String]?

        var currentKeys: JWKSet { remote?.current ?? keys }
        /// Which keys a cached verification was made with.
        var keySource: VerifiedTokens.KeySource {
            if let remote { return .init(name: remote.uri, generation: remote.generation) }
            return .init(name: rule.jwks ?? "", generation: 0)
        }
    }

    package var providers: [Provider]
    /// Tokens verified before (shared by every route of the gateway); nil: none kept.
    package var verified: VerifiedTokens?

    /// The rules of `policies` (their `file://` JWKS were inlined by the loader; `remote` holds
    /// the fetched ones by URI); a rule whose keys could not be had has none, and rejects every
    /// token (fail closed).
    package init(_ policies: [RequestAuthentication], remote: [String: RemoteJWKS] = [:], verified: VerifiedTokens? = nil) {
        self.verified = verified
        providers = policies.flatMap { $0.jwtRules ?? [] }.sorted { $0.issuer < $1.issuer }.map { rule in
            Provider(rule: rule, keys: rule.jwks.flatMap { try? JWKSet.parse(Data($0.utf8)).get() } ?? JWKSet(keys: []),
                     remote: rule.jwksUri.flatMap { remote[$0] },
                     allowedAudiences: rule.audiences.flatMap { $0.isEmpty ? nil : Array(Set($0.map(Self.plainAudience))).sorted() })
        }
    }

    /// An audience without `https://`/`http://` and a trailing `/`.
    static func plainAudience(_ audience: String) -> String {
        var value = Substring(audience)
        for scheme in ["https://", "http://"] where value.hasPrefix(scheme) { value = value.dropFirst(scheme.count) }
        if value.hasSuffix("/") { value = value.dropLast() }
        return String(value)
    }

    package var isEmpty: Bool { providers.isEmpty }

    package enum Outcome: Sendable, Equatable {
        /// No token where any rule looks: passes, with no request principal.
        case noToken
        /// A valid token; `removing` is where it was, when the rule does not forward it.
        case verified(RequestPrincipal, headers: [(name: String, value: String)], removing: String?)
        /// 401 (403 for audiences) with Envoy's text.
        case rejected(status: Int, message: String)

        package static func == (a: Outcome, b: Outcome) -> Bool {
            switch (a, b) {
            case (.noToken, .noToken): true
            case (.verified(let p, let h, let r), .verified(let q, let i, let s)): p == q && r == s && h.elementsEqual(i, by: { $0 == $1 })
            case (.rejected(let s, let m), .rejected(let t, let n)): s == t && m == n
            default: false
            }
        }
    }

    /// The token the rules look for: their `fromHeaders` (with prefix), `fromParams`, `fromCookies`,
    /// else Envoy's default `Authorization: Bearer` and `access_token`.
    func token(in headers: HTTPHeaders, path: String) -> (token: Substring, header: String?)? {
        // The query is split only when a rule looks there and the path has one.
        let query = path.utf8.firstIndex(of: UInt8(ascii: "?")).map { path[path.index(after: $0)...] }
        func param(_ name: String) -> String? {
            guard let query else { return nil }
            return query.split(separator: "&").lazy.compactMap { item -> String? in
                let pair = item.split(separator: "=", maxSplits: 1)
                return pair.count == 2 && pair[0] == name ? String(pair[1]).removingPercentEncoding : nil
            }.first
        }
        // By index, each rule's lists read in place: copying a rule out retains all its fields.
        for index in providers.indices {
            let explicit = providers[index].rule.fromHeaders != nil || providers[index].rule.fromParams != nil || providers[index].rule.fromCookies != nil
            if !explicit {
                // Envoy's default: `Authorization: Bearer <token>`, else `?access_token=`.
                if let value = headers.first(name: "authorization"), value.hasPrefix("Bearer ") {
                    return (value.dropFirst("Bearer ".count).trimmingASCIISpaces(), "authorization")
                }
                if let value = param("access_token") { return (Substring(value), nil) }
                continue
            }
            for header in providers[index].rule.fromHeaders ?? [] {
                guard let value = headers.first(name: header.name) else { continue }
                let prefix = header.prefix ?? ""
                if value.hasPrefix(prefix) { return (value.dropFirst(prefix.count).trimmingASCIISpaces(), header.name) }
            }
            for name in providers[index].rule.fromParams ?? [] {
                if let value = param(name) { return (Substring(value), nil) }
            }
            for name in providers[index].rule.fromCookies ?? [] {
                for cookie in headers["cookie"].flatMap({ $0.split(separator: ";") }) {
                    let pair = cookie.trimmingASCIISpaces().split(separator: "=", maxSplits: 1)
                    if pair.count == 2, pair[0] == name { return (pair[1], nil) }
                }
            }
        }
        return nil
    }

    /// The token a connection's previous request carried, once verified: a keep-alive client
    /// sends the same one again, and comparing its bytes costs less than copying and hashing it
    /// for `VerifiedTokens`.
    package struct LastToken: Sendable {
        var raw: String
        var jwt: JWT
        var source: VerifiedTokens.KeySource
    }

    package func authenticate(_ headers: HTTPHeaders, path: String, now: Date = Date()) -> Outcome {
        var last: LastToken?
        return authenticate(headers, path: path, now: now, last: &last)
    }

    /// `last`: the connection's previous verified token, replaced by this one when it verifies.
    package func authenticate(_ headers: HTTPHeaders, path: String, now: Date = Date(), last: inout LastToken?) -> Outcome {
        guard let (found, header) = token(in: headers, path: path) else { return .noToken }
        // A token verified before is not parsed or verified again; every other check is made.
        let remembered = last.flatMap { $0.raw.utf8.count == found.utf8.count && UTF8Bytes.equal(found, at: 0, $0.raw) ? $0 : nil }
        let raw = remembered?.raw ?? String(found)
        let cached = remembered.map { (jwt: $0.jwt, source: $0.source) } ?? verified?.lookup(raw)
        guard let jwt = cached?.jwt ?? JWT(raw) else { return .rejected(status: 401, message: "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections") }
        guard jwt.hasSupportedAlgorithm else { return .rejected(status: 401, message: "Jwt header [alg] is not supported") }
        // By index: the provider (its rule and keys) is read in place, not copied per request.
        guard let issuer = jwt.issuer, let index = providers.firstIndex(where: { $0.rule.issuer == issuer }) else {
            return .rejected(status: 401, message: "Jwt issuer is not configured")
        }
        let skew = 60.0, seconds = now.timeIntervalSince1970
        if let nbf = jwt.notBefore, seconds + skew < nbf { return .rejected(status: 401, message: "Jwt not yet valid") }
        if let exp = jwt.expires, seconds > exp + skew { return .rejected(status: 401, message: "Jwt is expired") }
        if let allowed = providers[index].allowedAudiences {
            guard jwt.plainAudiences.contains(where: { audience in allowed.contains { $0.utf8.elementsEqual(audience.utf8) } }) else {
                return .rejected(status: 403, message: "Audiences in Jwt are not allowed")
            }
        }
        let source = providers[index].keySource
        if cached?.source != source {
            // Keys whose kid or alg (when both sides say) differ are skipped; the rest are tried.
            let candidates = providers[index].currentKeys.keys.filter { key in
                (key.kid == nil || jwt.kid == nil || key.kid == jwt.kid) && (key.alg == nil || key.alg == jwt.alg)
            }
            guard !candidates.isEmpty else { return .rejected(status: 401, message: "Jwks doesn't have key to match kid or alg from Jwt") }
            guard candidates.contains(where: jwt.isSigned) else { return .rejected(status: 401, message: "Jwt verification fails") }
            verified?.store(raw, jwt: jwt, source: source)
            last = LastToken(raw: raw, jwt: jwt, source: source)
        } else if remembered == nil, let cached {
            last = LastToken(raw: raw, jwt: cached.jwt, source: cached.source)
        }

        var added: [(name: String, value: String)] = []
        if let name = providers[index].rule.outputPayloadToHeader { added.append((name, jwt.encodedPayload)) }
        for output in providers[index].rule.outputClaimToHeaders ?? [] {
            if let value = Self.claim(output.claim.split(separator: ".").map(String.init), in: jwt.claims)?.headerValue { added.append((output.header, value)) }
        }
        let forward = providers[index].rule.forwardOriginalToken ?? false
        var principal = RequestPrincipal(issuer: issuer, subject: jwt.subject, claims: jwt.claims)
        principal.encodedPayload = jwt.encodedPayload
        return .verified(principal, headers: added, removing: forward ? nil : header)
    }

    /// A claim by path (`a.b` or `[a][b]`), nested objects followed.
    static func claim(_ path: [String], in claims: [String: ConfigValue]) -> ConfigValue? {
        guard let first = path.first, var value = claims[first] else { return nil }
        for key in path.dropFirst() {
            guard case .object(let object) = value, let next = object[key] else { return nil }
            value = next
        }
        return value
    }
}

extension String {
    func trimmingASCIISpaces() -> Substring { self[...].trimmingASCIISpaces() }
}

extension Substring {
    /// Without leading and trailing spaces and tabs (HTTP's OWS), without Foundation's
    /// Unicode-aware trimming, which costs more than the rest of a token lookup; byte by byte,
    /// as stepping over a token's hundreds of Characters costs a grapheme-boundary check each.
    func trimmingASCIISpaces() -> Substring {
        let bytes = utf8
        func isSpace(_ byte: UInt8) -> Bool { byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        var start = bytes.startIndex, end = bytes.endIndex
        while start < end, isSpace(bytes[start]) { start = bytes.index(after: start) }
        while end > start, isSpace(bytes[bytes.index(before: end)]) { end = bytes.index(before: end) }
        return self[start..<end]
    }
}
