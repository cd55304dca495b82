// Command kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status), the library Flux
// uses for health checks, computes for Kubernetes objects.
//
// It reads objects from stdin, either as YAML (one or several "---"-separated documents) or as JSON
// (one or several concatenated objects); one format per stream. A document whose kind ends in
// "List" (kubectl get -o yaml) is expanded into its items.
// For each object it prints one JSON line:
//
//	{"apiVersion":"vdc.dev/v1alpha1","kind":"VirtualMachine","namespace":"demo","name":"tiny",
//	 "status":"Current","message":"Resource is Ready"}
//
// status is one of Current, InProgress, Failed, Terminating, NotFound, Unknown; a document that
// kstatus cannot read gets Unknown and an "error". The exit code is 0 unless stdin is not readable
// YAML/JSON at all.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type line struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	Status     string `json:"status"`
	Message    string `json:"message"`
	Error      string `json:"error,omitempty"`
}

func compute(obj map[string]interface{}) line {
	u := &unstructured.Unstructured{Object: obj}
	out := line{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()}
	res, err := status.Compute(u)
	if err != nil {
		out.Status, out.Error = status.UnknownStatus.String(), err.Error()
		return out
	}
	out.Status, out.Message = res.Status.String(), res.Message
	return out
}

// expand turns a *List document into its items; other documents are returned as they are.
func expand(doc map[string]interface{}) []map[string]interface{} {
	kind, _ := doc["kind"].(string)
	items, ok := doc["items"].([]interface{})
	if !strings.HasSuffix(kind, "List") || !ok {
		return []map[string]interface{}{doc}
	}
	var objs []map[string]interface{}
	for _, item := range items {
		if m, ok := item.(map[string]interface{}); ok {
			objs = append(objs, expand(m)...)
		}
	}
	return objs
}

func run(in io.Reader, out io.Writer) error {
	decoder := utilyaml.NewYAMLOrJSONDecoder(bufio.NewReader(in), 4096)
	enc := json.NewEncoder(out)
	for {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		// Kubernetes' JSON decoding: whole numbers become int64 (metadata.generation), as kstatus expects.
		var doc map[string]interface{}
		if err := utiljson.Unmarshal(raw, &doc); err != nil {
			return err
		}
		if doc == nil { // an empty document ("---" twice)
			continue
		}
		for _, obj := range expand(doc) {
			if err := enc.Encode(compute(obj)); err != nil {
				return err
			}
		}
	}
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
		os.Exit(1)
	}
}
