import Foundation
import Yams

/// Istio policy files as users already run them: multi-document YAML where the kinds in
/// `kinds` are read and every other kind is skipped with a note. Valid Istio fields EastWest does not
/// carry out yet load with a warning naming them; only what Istio itself would reject, and
/// fields Istio does not have, are errors — except the choices EastWest deliberately accepts
/// (`distribute` with `failover`, the design document's `circuitBreaker:`), which warn.
package enum IstioPolicyLoader {
    package struct Loaded: Sendable {
        package var destinationRules: [DestinationRule] = []
        package var virtualServices: [VirtualService] = []
        /// Where each VirtualService's `http[i]` is written (`file:line`), by VirtualService index.
        package var virtualServiceOrigins: [[String]] = []
        /// Gateway resources, with where each is written (`file:line`).
        package var gateways: [IstioGateway] = []
        package var gatewayOrigins: [String] = []
        package var serviceEntries: [ServiceEntry] = []
        package var workloadEntries: [WorkloadEntry] = []
        package var authorizationPolicies: [AuthorizationPolicy] = []
        package var peerAuthentications: [PeerAuthentication] = []
        package var envoyFilters: [EnvoyFilter] = []
        package var requestAuthentications: [RequestAuthentication] = []
        package var telemetries: [Telemetry] = []
        /// MeshConfig `extensionProviders`, from an `istio` ConfigMap or an IstioOperator.
        package var extensionProviders: [MeshConfig.ExtensionProvider] = []
        package var warnings: [ConfigError] = []
        /// One line per document of a kind EastWest does not read.
        package var skipped: [String] = []

        package init() {}

        package func rule(for host: String) -> DestinationRule? { destinationRules.rule(for: host) }

        /// Another file's resources after these (a policy list is read in order).
        package mutating func merge(_ other: Loaded) {
            destinationRules += other.destinationRules
            virtualServices += other.virtualServices
            virtualServiceOrigins += other.virtualServiceOrigins
            gateways += other.gateways
            gatewayOrigins += other.gatewayOrigins
            serviceEntries += other.serviceEntries
            workloadEntries += other.workloadEntries
            authorizationPolicies += other.authorizationPolicies
            peerAuthentications += other.peerAuthentications
            envoyFilters += other.envoyFilters
            requestAuthentications += other.requestAuthentications
            telemetries += other.telemetries
            extensionProviders += other.extensionProviders
            warnings += other.warnings
            skipped += other.skipped
        }
    }

    static let apiVersions: Set<String> = ["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"]

    /// Valid DestinationRule fields (istio/api destination_rule.proto) EastWest does not carry
    /// out yet: they load with a warning.
    static let notImplemented: Set<String> = [
        "workloadSelector", "tls", "tunnel", "proxyProtocol", "consistentHash", "warmupDurationSecs", "warmup",
        "maxConnectionDuration", "idleTimeout", "http2KeepAlive",
        "consecutiveErrors", "trafficDistribution",
    ]

    package static func load(file: String) throws(ConfigErrors) -> Loaded {
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw ConfigErrors([ConfigError(code: .unreadableFile, file: file, message: "cannot read file: \((error as NSError).localizedDescription)")])
        }
        return try load(yaml: text, file: file)
    }

    package static func load(yaml: String, file: String) throws(ConfigErrors) -> Loaded {
        var documents: [Node] = []
        do {
            // Document by document, so a syntax error anywhere is an error at its position
            // (Yams' `compose_all` sequence ends quietly at one, losing every later document).
            let parser = try Yams.Parser(yaml: yaml)
            while let document = try parser.nextRoot() { documents.append(document) }
        } catch let error as YamlError {
            throw ConfigErrors([ConfigLoader.yamlError(error, file: file)])
        } catch {
            throw ConfigErrors([ConfigError(code: .malformedYAML, file: file, message: "invalid YAML: \(error)")])
        }
        var loaded = Loaded()
        var errors: [ConfigError] = []
        for (index, document) in documents.enumerated() {
            let map = SourceMap(file: file, root: document)
            guard let mapping = document.mapping else { continue }
            let kind = mapping["kind"]?.string ?? ""
            let apiVersion = mapping["apiVersion"]?.string ?? ""
            let name = mapping["metadata"]?.mapping?["name"]?.string ?? "document \(index + 1)"
            if kind == "ConfigMap", apiVersion == "v1", isMeshConfigMap(name: name) {
                errors += readMeshConfigMap(mapping["data"] ?? Node.mapping(Node.Mapping([])), map, &loaded)
                continue
            }
            guard let reader = kinds[kind] else {
                loaded.skipped.append("\(file): note: skipped \(kind.isEmpty ? "a document without kind" : kind) '\(name)' (EastWest reads \(kinds.keys.sorted().joined(separator: ", ")))")
                continue
            }
            guard reader.apiVersions.contains(apiVersion) else {
                errors.append(map.error(.invalidValue, at: FieldPath().key("apiVersion"),
                    "'\(apiVersion)' is not a \(kind) version (\(reader.apiVersions.sorted().joined(separator: ", ")))"))
                continue
            }
            guard let spec = mapping["spec"] else {
                errors.append(map.error(.missingField, at: [], "missing required field 'spec'"))
                continue
            }
            errors += reader.read(spec, map, &loaded)
        }
        guard errors.isEmpty else { throw ConfigErrors(errors) }
        return loaded
    }

    /// One Istio resource kind EastWest reads: the API versions it accepts and how a document's
    /// `spec` becomes part of `Loaded` (its errors returned, its warnings added). A new kind
    /// (VirtualService, AuthorizationPolicy, …) registers here; everything else is skipped with
    /// a note.
    package struct KindReader: Sendable {
        package var apiVersions: Set<String>
        package var read: @Sendable (_ spec: Node, _ map: SourceMap, _ loaded: inout Loaded) -> [ConfigError]
    }

    package static let kinds: [String: KindReader] = [
        "DestinationRule": KindReader(apiVersions: apiVersions, read: readDestinationRule),
        "VirtualService": KindReader(apiVersions: apiVersions, read: readVirtualService),
        "Gateway": KindReader(apiVersions: apiVersions, read: readGateway),
        "ServiceEntry": KindReader(apiVersions: apiVersions, read: readServiceEntry),
        "WorkloadEntry": KindReader(apiVersions: apiVersions, read: readWorkloadEntry),
        "AuthorizationPolicy": KindReader(apiVersions: securityAPIVersions, read: readAuthorizationPolicy),
        "PeerAuthentication": KindReader(apiVersions: securityAPIVersions, read: readPeerAuthentication),
        "EnvoyFilter": KindReader(apiVersions: envoyFilterAPIVersions, read: readEnvoyFilter),
        "RequestAuthentication": KindReader(apiVersions: securityAPIVersions, read: readRequestAuthentication),
        "Telemetry": KindReader(apiVersions: telemetryAPIVersions, read: readTelemetry),
        "IstioOperator": KindReader(apiVersions: istioOperatorAPIVersions, read: readIstioOperator),
    ]

    private static func readDestinationRule(_ spec: Node, _ map: SourceMap, _ loaded: inout Loaded) -> [ConfigError] {
        switch ConfigLoader.decode(DestinationRule.self, node: spec, map: map, at: FieldPath().key("spec")) {
        case .failure(let error):
            return [error]
        case .success(let (rule, unknownKeys)):
            let errors = classify(unknownKeys, notImplemented: notImplemented, kind: "DestinationRule", map: map, loaded: &loaded)
            let (problems, warnings) = check(rule, map: map)
            loaded.warnings += warnings
            loaded.destinationRules.append(rule)
            return errors + problems
        }
    }

    /// One named resource's spec, the way every kind reads it: decoded, named from its
    /// `metadata` (Kubernetes' default namespace when absent), keys it did not decode classified,
    /// checked; `store` keeps it in `loaded`.
    static func readNamed<Resource: NamedIstioResource>(
        _ type: Resource.Type, kind: String, notImplemented: Set<String>, spec: Node, map: SourceMap, loaded: inout Loaded,
        check: (Resource) -> (errors: [ConfigError], warnings: [ConfigError]), store: (Resource, inout Loaded) -> Void
    ) -> [ConfigError] {
        switch ConfigLoader.decode(type, node: spec, map: map, at: FieldPath().key("spec")) {
        case .failure(let error):
            return [error]
        case .success(let (decoded, unknownKeys)):
            var resource = decoded
            let metadata = map.root?.mapping?["metadata"]?.mapping
            resource.name = metadata?["name"]?.string ?? ""
            resource.namespace = metadata?["namespace"]?.string ?? "default"
            let errors = classify(unknownKeys, notImplemented: notImplemented, kind: kind, map: map, loaded: &loaded)
            let (problems, warnings) = check(resource)
            loaded.warnings += warnings
            store(resource, &loaded)
            return errors + problems
        }
    }

    /// Keys a kind's model did not decode: a valid Istio field EastWest does not carry out yet
    /// loads with a warning; anything else is an error.
    static func classify(_ unknownKeys: [FieldPath], notImplemented: Set<String>, kind: String, map: SourceMap,
                         loaded: inout Loaded) -> [ConfigError] {
        var errors: [ConfigError] = []
        for path in unknownKeys {
            guard case .key(let key)? = path.components.last else { continue }
            if notImplemented.contains(key) {
                loaded.warnings.append(map.error(.notImplemented, at: path, "valid Istio field, not carried out by EastWest yet; ignored").asWarning)
            } else {
                errors.append(map.error(.unknownField, at: path, "unknown field '\(key)' (not a \(kind) field)"))
            }
        }
        return errors
    }

    /// What Istio's validation rejects (errors) and what it would do differently (warnings).
    static func check(_ rule: DestinationRule, map: SourceMap) -> (errors: [ConfigError], warnings: [ConfigError]) {
        var errors: [ConfigError] = []
        var warnings: [ConfigError] = []
        let spec = FieldPath().key("spec")
        if rule.host.isEmpty { errors.append(map.error(.invalidValue, at: spec.key("host"), "must not be empty")) }
        var policies: [(FieldPath, TrafficPolicy)] = rule.trafficPolicy.map { [(spec.key("trafficPolicy"), $0)] } ?? []
        for (i, subset) in (rule.subsets ?? []).enumerated() {
            if let policy = subset.trafficPolicy { policies.append((spec.key("subsets").index(i).key("trafficPolicy"), policy)) }
        }
        for (path, policy) in policies {
            if policy.circuitBreaker != nil {
                warnings.append(map.error(.istioDifference, at: path.key("circuitBreaker"),
                    "not an Istio field; read as 'outlierDetection' (write it as outlierDetection: Istio rejects circuitBreaker)").asWarning)
            }
            if let setting = policy.loadBalancer?.localityLbSetting {
                let settingPath = path.key("loadBalancer").key("localityLbSetting")
                for (i, rule) in (setting.distribute ?? []).enumerated() {
                    let total = rule.to.values.reduce(0, +)
                    if rule.to.values.contains(where: { !(1...100).contains($0) }) || total != 100 {
                        errors.append(map.error(.invalidValue, at: settingPath.key("distribute").index(i).key("to"),
                            "weights must each be 1-100 and sum to 100 (they sum to \(total))"))
                    }
                }
                for (i, rule) in (setting.failover ?? []).enumerated() where rule.from == rule.to || rule.to.contains("*") {
                    errors.append(map.error(.invalidValue, at: settingPath.key("failover").index(i),
                        "failover 'from' and 'to' must be different regions, without '*'"))
                }
                if !(setting.distribute ?? []).isEmpty, !(setting.failover ?? []).isEmpty {
                    warnings.append(map.error(.istioDifference, at: settingPath,
                        "Istio rejects 'distribute' together with 'failover'; EastWest accepts it: the matching distribute rule's localities form the first priority with its weights, failover orders the rest behind them").asWarning)
                }
                let failover = !(setting.failover ?? []).isEmpty || !(setting.failoverPriority ?? []).isEmpty || setting.enabled == true
                if failover, (setting.distribute ?? []).isEmpty, policy.effectiveOutlierDetection == nil, rule.trafficPolicy?.effectiveOutlierDetection == nil {
                    warnings.append(map.error(.istioDifference, at: settingPath,
                        "locality failover is configured but there is no outlierDetection: Istio (and EastWest) then do NO failover — every locality gets traffic as if in one priority. Add outlierDetection to turn failover on").asWarning)
                }
            }
            if let upgrade = policy.connectionPool?.http?.h2UpgradePolicy, !ConnectionPoolSettings.HTTP.h2UpgradePolicies.contains(upgrade) {
                errors.append(map.error(.invalidValue, at: path.key("connectionPool").key("http").key("h2UpgradePolicy"),
                    "'\(upgrade)' is not one of \(ConnectionPoolSettings.HTTP.h2UpgradePolicies.sorted().joined(separator: ", "))"))
            }
            if let streams = policy.connectionPool?.http?.maxConcurrentStreams, streams < 0 {
                errors.append(map.error(.invalidValue, at: path.key("connectionPool").key("http").key("maxConcurrentStreams"), "must not be negative"))
            }
            if policy.loadBalancer?.simple == .passthrough {
                warnings.append(map.error(.istioDifference, at: path.key("loadBalancer").key("simple"),
                    "PASSTHROUGH forwards to the connection's original destination, which a gateway does not have; EastWest balances round robin").asWarning)
            }
        }
        return (errors, warnings)
    }
}

/// An Istio resource named by its `metadata` (set by the loader, never decoded).
package protocol NamedIstioResource: Codable {
    var name: String { get set }
    var namespace: String { get set }
}

extension VirtualService: NamedIstioResource {}
extension IstioGateway: NamedIstioResource {}
extension ServiceEntry: NamedIstioResource {}
extension WorkloadEntry: NamedIstioResource {}
