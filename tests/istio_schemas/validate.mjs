// Validate Istio objects against Istio's own CRD schemas (@kubernetes-models/istio, generated
// from Istio's crd-all.gen.yaml). Reads a JSON array of objects on stdin, writes a JSON array
// with one list of "path: message" errors per object (empty = valid).
import { VirtualService } from "@kubernetes-models/istio/networking.istio.io/v1/VirtualService";
import { DestinationRule } from "@kubernetes-models/istio/networking.istio.io/v1/DestinationRule";

const kinds = { VirtualService, DestinationRule };
let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((obj) => {
  const Kind = kinds[obj.kind];
  if (!Kind) return [`kind: no schema for ${obj.kind}`];
  try {
    new Kind(obj).validate();
    return [];
  } catch (err) {
    const details = err.errors ?? err.details ?? [{ instancePath: "", message: String(err) }];
    return details.map((d) => `${d.instancePath || "/"}: ${d.message}`);
  }
});
process.stdout.write(JSON.stringify(results));
