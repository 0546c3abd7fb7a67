/// Everything one gateway process needs, as written by `eastwest up` or by hand
/// (`eastwest gateway --config FILE`).
///
/// ```yaml
/// name: east-gw-1
/// cluster: east
/// locality: us-east1/us-east1-a
/// trustDomain: cluster.local
/// listen: 127.0.1.1:15443
/// admin: 127.0.1.1:15000
/// tls: {certificateChain: certs/east/gw/cert-chain.pem, privateKey: …/key.pem, rootCertificate: …/root-cert.pem}
/// services:
/// - host: echo.default.svc.cluster.local
///   port: 8080
///   endpoints: [{address: 127.0.1.10:8080, locality: us-east1/us-east1-a}]
/// remoteClusters:
/// - name: west
///   gateways: [{name: west-gw-1, address: 127.0.2.1:15443}]
///   services: [{host: echo.default.svc.cluster.local, port: 8080, endpoints: […]}]
/// ```
package struct GatewayConfig: Codable, Sendable, Equatable {
    package var name: String
    package var cluster: String
    package var network: String?
    package var locality: Locality?
    /// Default `cluster.local`, Istio's.
    package var trustDomain: String?
    /// Default `<address>:15443`; Istio's east-west gateways listen on 15443.
    package var listen: HostPort
    /// Default: the listen host on port 15000, Envoy's admin port.
    package var admin: HostPort?
    /// A file whose content is the bearer token admin writes (`/v1/catalog/*`, `/v1/faults`)
    /// need; without one, writes are refused. `eastwest up` writes one per deployment.
    package var adminTokenFile: String?
    /// SPIFFE IDs whose mesh certificate makes a write on the admin listener an operator's, over
    /// TLS on the same port (reads stay open in plaintext). Default: the trust domain's
    /// `ns/istio-system/sa/eastwest-operator`, which `eastwest ca operator` issues.
    package var adminOperators: [String]?

    package var effectiveAdminOperators: Set<String> {
        Set(adminOperators ?? [(try? GatewayIdentity.operatorID(trustDomain: effectiveTrustDomain))?.description].compactMap { $0 })
    }
    /// PEM CA certificates trusted, besides the system's, for RequestAuthentication `jwksUri`
    /// servers (an issuer with a private CA).
    package var jwksCACertificates: String?
    package var tls: TLSFiles
    /// Istio's `COMPLIANCE_POLICY` for this gateway's mTLS, both ways. Absent: Envoy's default
    /// key exchange groups, X25519 and P-256, as an Istio gateway negotiates them.
    package var compliancePolicy: CompliancePolicy?
    /// The labels Gateway resources select this gateway by. Default `{istio: eastwestgateway}`,
    /// the label of Istio's east-west gateway.
    package var labels: [String: String]?
    /// The namespace this gateway runs in, as Istio's would be. Default `istio-system`. Gateway
    /// resources select by labels alone (Istio's default, `PILOT_SCOPE_GATEWAY_TO_NAMESPACE`
    /// off); namespace-scoped policies (AuthorizationPolicy) will select by it.
    package var namespace: String?
    /// Trust domains whose clients are served. Default: `[trustDomain]`.
    package var allowedTrustDomains: [String]?
    /// Identities a peer gateway may present. Default: any cluster's gateway identity,
    /// `spiffe://<trustDomain>/ns/istio-system/sa/eastwest-gateway-<cluster>` (`GatewayIdentity`).
    /// A listed identity outside that form is a peer on the data path but speaks for no
    /// cluster in federation.
    package var peerGatewayIdentities: [String]?
    package var timeouts: Timeouts?
    /// Upstreams tried for one connection before giving up (Envoy's TCP proxy
    /// `max_connect_attempts`, default 1; ours 3 so a dead endpoint costs no connection).
    package var maxConnectAttempts: Int?
    /// Connections accepted but not yet past their TLS handshake, at most; beyond it a new
    /// connection is closed at accept so a flood of idle or half-sent connections cannot take
    /// every file descriptor. Default 4096.
    package var maxPendingHandshakes: Int?
    /// The HTTP access-log line, in Envoy's command operators (`[%START_TIME%] "%REQ(:METHOD)% …"`);
    /// absent: Istio's default format.
    package var accessLogFormat: String?
    /// `TEXT` (default) or `JSON`: Istio's `accessLogEncoding`; JSON writes one object per request
    /// with Istio's keys.
    package var accessLogEncoding: AccessLogEncoding?
    package var services: [ServiceConfig]?
    package var remoteClusters: [RemoteCluster]?
    /// Gossip with other gateways (membership and endpoint catalog). Absent: no federation.
    package var federation: FederationConfig?
    /// Istio YAML files with DestinationRules (relative to this config file).
    package var policies: [String]?

    /// Istio's compliance policies (`COMPLIANCE_POLICY`, pilot/pkg/features): `pqc` is TLS 1.3
    /// with the post-quantum hybrid X25519MLKEM768 as the only key exchange. Istio's
    /// `fips-140-2` is not carried out, and is refused rather than half done.
    package enum CompliancePolicy: String, Codable, Sendable, Equatable {
        case pqc

        package init(from decoder: any Decoder) throws {
            self = try decoder.parsedString(Self.init(rawValue:)) { "'\($0)' is not a compliance policy EastWest carries out (pqc is; Istio's fips-140-2 is not)" }
        }
    }

    package struct TLSFiles: Codable, Sendable, Equatable {
        package var certificateChain: String
        package var privateKey: String
        package var rootCertificate: String
        package init(certificateChain: String, privateKey: String, rootCertificate: String) {
            self.certificateChain = certificateChain; self.privateKey = privateKey; self.rootCertificate = rootCertificate
        }
    }

    package struct Timeouts: Codable, Sendable, Equatable {
        /// Upstream connect timeout. Default 5s, Envoy's `connect_timeout` when unset.
        package var connect: ConfigDuration?
        /// A connection with no bytes either way for this long is closed. Default 1h, Envoy's
        /// TCP proxy `idle_timeout`.
        package var idle: ConfigDuration?
        /// TLS handshake must finish within this. Default 10s (Envoy's `transport_socket_connect_timeout` is unset; we bound it).
        package var handshake: ConfigDuration?
        /// On SIGTERM open connections get this long to finish. Default 30s, Envoy's `--drain-time-s` is 600 but a gateway restart should not take ten minutes.
        package var drain: ConfigDuration?
        package init(connect: ConfigDuration? = nil, idle: ConfigDuration? = nil, handshake: ConfigDuration? = nil, drain: ConfigDuration? = nil) {
            self.connect = connect; self.idle = idle; self.handshake = handshake; self.drain = drain
        }
    }

    package struct ServiceConfig: Codable, Sendable, Equatable {
        package var host: String
        package var port: Int
        package var endpoints: [Endpoint]
        /// Named label selectors, as a DestinationRule's `subsets` would give them.
        package var subsets: [String: [String: String]]?
        /// What the port speaks, in Istio's names (`http`, `http2`, `grpc`, `tcp`, …); it decides
        /// the ALPN the gateway offers. Unset: TCP.
        package var `protocol`: ServiceProtocol?
        package init(host: String, port: Int, endpoints: [Endpoint], subsets: [String: [String: String]]? = nil,
                     protocol: ServiceProtocol? = nil) {
            self.host = host; self.port = port; self.endpoints = endpoints; self.subsets = subsets; self.protocol = `protocol`
        }
    }

    package struct RemoteGateway: Codable, Sendable, Equatable {
        package var name: String
        package var address: HostPort
        package var locality: Locality?
        package init(name: String, address: HostPort, locality: Locality? = nil) {
            self.name = name; self.address = address; self.locality = locality
        }
    }

    package struct RemoteCluster: Codable, Sendable, Equatable {
        package var name: String
        package var network: String?
        package var gateways: [RemoteGateway]
        package var services: [ServiceConfig]?
        package init(name: String, network: String? = nil, gateways: [RemoteGateway], services: [ServiceConfig]? = nil) {
            self.name = name; self.network = network; self.gateways = gateways; self.services = services
        }
    }

    package init(name: String, cluster: String, network: String? = nil, locality: Locality? = nil, trustDomain: String? = nil,
                 listen: HostPort, admin: HostPort? = nil, tls: TLSFiles, allowedTrustDomains: [String]? = nil,
                 peerGatewayIdentities: [String]? = nil, timeouts: Timeouts? = nil, maxConnectAttempts: Int? = nil,
                 services: [ServiceConfig]? = nil, remoteClusters: [RemoteCluster]? = nil, federation: FederationConfig? = nil) {
        self.name = name; self.cluster = cluster; self.network = network; self.locality = locality
        self.trustDomain = trustDomain; self.listen = listen; self.admin = admin; self.tls = tls
        self.allowedTrustDomains = allowedTrustDomains; self.peerGatewayIdentities = peerGatewayIdentities
        self.timeouts = timeouts; self.maxConnectAttempts = maxConnectAttempts
        self.services = services; self.remoteClusters = remoteClusters; self.federation = federation
    }

    // MARK: - Effective values (defaults applied)

    package var effectiveTrustDomain: String { trustDomain ?? "cluster.local" }
    package var effectiveAdmin: HostPort { admin ?? HostPort(host: listen.host, port: 15000) }
    package var effectiveAllowedTrustDomains: Set<String> { Set(allowedTrustDomains ?? [effectiveTrustDomain]) }
    package var connectTimeout: Duration { timeouts?.connect?.duration ?? .seconds(5) }
    package var idleTimeout: Duration { timeouts?.idle?.duration ?? .seconds(3600) }
    package var handshakeTimeout: Duration { timeouts?.handshake?.duration ?? .seconds(10) }
    package var drainTimeout: Duration { timeouts?.drain?.duration ?? .seconds(30) }
    package var effectiveMaxConnectAttempts: Int { maxConnectAttempts ?? 3 }
    package var effectiveMaxPendingHandshakes: Int { maxPendingHandshakes ?? 4096 }
    package var effectiveLabels: [String: String] { labels ?? ["istio": "eastwestgateway"] }
    package var effectiveNamespace: String { namespace ?? "istio-system" }

    /// This gateway's own identity, which binds it to its cluster.
    package var gatewayIdentity: SpiffeID? { try? GatewayIdentity.spiffeID(cluster: cluster, trustDomain: effectiveTrustDomain) }

    /// Parsed `peerGatewayIdentities`; nil means any gateway identity. `validate` guarantees they parse.
    package var listedPeerGatewayIdentities: Set<SpiffeID>? {
        peerGatewayIdentities.map { Set($0.compactMap { try? SpiffeID(parsing: $0) }) }
    }

    /// Which verified identities are peer gateways here.
    package var peerGatewayRule: PeerGatewayRule { PeerGatewayRule(listed: listedPeerGatewayIdentities) }

    /// This cluster's service entries and those of every statically configured remote cluster.
    package var everyService: [ServiceConfig] {
        (services ?? []) + (remoteClusters ?? []).flatMap { $0.services ?? [] }
    }

    /// What the data plane routes over: this cluster's endpoints plus the statically configured
    /// remote clusters (federation will fill the latter).
    package var meshEndpoints: MeshEndpoints {
        func services(_ list: [ServiceConfig]?) -> [ServiceKey: [Endpoint]] {
            Dictionary((list ?? []).map { (ServiceKey(host: $0.host, port: $0.port), $0.endpoints) }, uniquingKeysWith: +)
        }
        var clusters = [cluster: ClusterEndpoints(name: cluster, network: network, gateways: [], services: services(self.services))]
        for remote in remoteClusters ?? [] {
            clusters[remote.name] = ClusterEndpoints(
                name: remote.name, network: remote.network,
                gateways: remote.gateways.map { GatewayAddress(name: $0.name, address: $0.address, locality: $0.locality) },
                services: services(remote.services))
        }
        var protocols: [ServiceKey: ServiceProtocol] = [:]
        for service in everyService {
            if let value = service.protocol { protocols[ServiceKey(host: service.host, port: service.port)] = value }
        }
        return MeshEndpoints(localCluster: cluster, clusters: clusters, protocols: protocols)
    }
}

extension GatewayConfig: ConfigValidatable {
    package func validate(_ map: SourceMap) -> [ConfigError] {
        var errors: [ConfigError] = []
        let root = FieldPath()
        if name.isEmpty { errors.append(map.error(.invalidValue, at: root.key("name"), "must not be empty")) }
        if let problem = GatewayIdentity.problem(withClusterName: cluster) {
            errors.append(map.error(.invalidValue, at: root.key("cluster"), problem))
        }
        errors += ServiceListValidator.validateTrustDomain(trustDomain, at: root.key("trustDomain"), map: map)
        for (i, identity) in (peerGatewayIdentities ?? []).enumerated() {
            do { _ = try SpiffeID(parsing: identity) } catch {
                errors.append(map.error(.invalidValue, at: root.key("peerGatewayIdentities").index(i), error.description))
            }
        }
        errors += AccessLogFormat.validate(accessLogFormat, encoding: accessLogEncoding, at: root, map: map)
        if let pending = maxPendingHandshakes, pending < 1 {
            errors.append(map.error(.invalidValue, at: root.key("maxPendingHandshakes"), "must be at least 1"))
        }
        if let attempts = maxConnectAttempts, attempts < 1 {
            errors.append(map.error(.invalidValue, at: root.key("maxConnectAttempts"), "must be at least 1"))
        }
        for (key, value) in [("connect", timeouts?.connect), ("idle", timeouts?.idle), ("handshake", timeouts?.handshake)] {
            if let value, value.duration <= .zero {
                errors.append(map.error(.invalidValue, at: root.key("timeouts").key(key), "must be longer than 0s"))
            }
        }
        errors += ServiceListValidator.validate(services ?? [], at: root.key("services"), map: map)
        var names = Set<String>([cluster])
        for (i, remote) in (remoteClusters ?? []).enumerated() {
            let path = root.key("remoteClusters").index(i)
            if !names.insert(remote.name).inserted {
                errors.append(map.error(.duplicate, at: path.key("name"), "cluster '\(remote.name)' appears twice"))
            }
            if remote.gateways.isEmpty {
                errors.append(map.error(.invalidValue, at: path.key("gateways"), "a remote cluster needs at least one gateway to be reachable"))
            }
            errors += ServiceListValidator.validate(remote.services ?? [], at: path.key("services"), map: map)
        }
        errors += federation?.validate(at: root.key("federation"), map: map) ?? []
        return errors
    }
}

/// Checks shared by topologies and gateway configs: trust domains, service hosts, ports and
/// duplicates.
package enum ServiceListValidator {
    package static func validateTrustDomain(_ trustDomain: String?, at path: FieldPath, map: SourceMap) -> [ConfigError] {
        guard let trustDomain, (try? SpiffeID(parsing: "spiffe://\(trustDomain)")) == nil else { return [] }
        return [map.error(.invalidValue, at: path, "'\(trustDomain)' is not a valid trust domain (lower-case letters, digits, '.', '-', '_')")]
    }

    package static func validate(_ services: [GatewayConfig.ServiceConfig], at path: FieldPath, map: SourceMap) -> [ConfigError] {
        var errors: [ConfigError] = []
        var seen = Set<ServiceKey>()
        for (i, service) in services.enumerated() {
            let here = path.index(i)
            if case .failure(let error) = Result(catching: { () throws(ServerNameError) in try ServerName(parsing: service.host) }) {
                errors.append(map.error(.invalidValue, at: here.key("host"), error.reason))
            } else if service.host != service.host.lowercased() || service.host.hasPrefix("outbound_") {
                errors.append(map.error(.invalidValue, at: here.key("host"), "'\(service.host)' must be a lower-case DNS name"))
            }
            if !(1...65_535).contains(service.port) {
                errors.append(map.error(.invalidValue, at: here.key("port"), "\(service.port) is not a port from 1 to 65535"))
            }
            if !seen.insert(ServiceKey(host: service.host, port: service.port)).inserted {
                errors.append(map.error(.duplicate, at: here, "service \(service.host):\(service.port) is listed twice"))
            }
        }
        return errors
    }
}
