// Command sensor-check runs a Sensor's dependency filters and its argoWorkflow triggers'
// parameters with Argo Events' own code (the version go.mod pins), on webhook events given as
// JSON, so that the tests check the library's Sensors against Argo Events itself rather than
// against our reading of it. It does what the Sensor does between receiving an event and
// running `argo submit`: dependencies.Filter, then triggers.ApplyResourceParameters.
//
// Usage: sensor-check SENSOR.yaml EVENTS.json
//
//	sensor-check --decode FILE.yaml...
//
// --decode decodes every Sensor, EventSource and EventBus document of the files strictly into
// Argo Events' own types (a misspelled or misplaced field is an error, which the CRDs, schemaless
// for these kinds, do not catch) and prints one line per document; exit 1 on the first failure.
//
// EVENTS.json is a JSON list of event payloads as the GitHub event source emits them:
// {"headers": {...}, "body": {...}}. For each, one JSON line on stdout:
// {"fired": bool, "error": "...", "workflows": [<the resource each argoWorkflow trigger submits>]}.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/argoproj/argo-events/pkg/apis/events/v1alpha1"
	"github.com/argoproj/argo-events/pkg/sensors/dependencies"
	"github.com/argoproj/argo-events/pkg/sensors/triggers"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

type result struct {
	Fired     bool             `json:"fired"`
	Error     string           `json:"error,omitempty"`
	Workflows []map[string]any `json:"workflows"`
}

func main() {
	if len(os.Args) >= 2 && os.Args[1] == "--decode" {
		if err := decode(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "sensor-check:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: sensor-check SENSOR.yaml EVENTS.json")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "sensor-check:", err)
		os.Exit(1)
	}
}

func decode(files []string) error {
	for _, file := range files {
		text, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		for i, doc := range strings.Split(string(text), "\n---") {
			var head struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				return fmt.Errorf("%s: document %d: %w", file, i+1, err)
			}
			var target any
			switch head.Kind {
			case "Sensor":
				target = &v1alpha1.Sensor{}
			case "EventSource":
				target = &v1alpha1.EventSource{}
			case "EventBus":
				target = &v1alpha1.EventBus{}
			default:
				continue
			}
			if err := yaml.UnmarshalStrict([]byte(doc), target); err != nil {
				return fmt.Errorf("%s: %s %s: %w", file, head.Kind, head.Metadata.Name, err)
			}
			fmt.Printf("%s: %s %s: ok\n", file, head.Kind, head.Metadata.Name)
		}
	}
	return nil
}

func run(sensorFile, eventsFile string) error {
	text, err := os.ReadFile(sensorFile)
	if err != nil {
		return err
	}
	var sensor v1alpha1.Sensor
	if err := yaml.UnmarshalStrict(text, &sensor); err != nil {
		return fmt.Errorf("%s: %w", sensorFile, err)
	}
	raw, err := os.ReadFile(eventsFile)
	if err != nil {
		return err
	}
	var payloads []json.RawMessage
	if err := json.Unmarshal(raw, &payloads); err != nil {
		return fmt.Errorf("%s: %w", eventsFile, err)
	}
	out := json.NewEncoder(os.Stdout)
	for i, payload := range payloads {
		// The event as the EventBus delivers it to the Sensor: a CloudEvent with JSON data.
		event := &v1alpha1.Event{
			Context: &v1alpha1.EventContext{
				ID: fmt.Sprintf("event-%d", i), Source: "github", SpecVersion: "1.0",
				Type: "github", DataContentType: v1alpha1.MediaTypeJSON, Subject: "pull-requests",
				Time: metav1.NewTime(time.Now()),
			},
			Data: payload,
		}
		res := result{Fired: true, Workflows: []map[string]any{}}
		events := map[string]*v1alpha1.Event{}
		for _, dependency := range sensor.Spec.Dependencies {
			ok, err := dependencies.Filter(event, dependency.Filters, dependency.FiltersLogicalOperator)
			if err != nil {
				// The Sensor discards an event whose filters fail to evaluate.
				res.Error = err.Error()
			}
			if !ok || err != nil {
				res.Fired = false
			}
			events[dependency.Name] = event
		}
		if res.Fired {
			for _, trigger := range sensor.Spec.Triggers {
				workflow := trigger.Template.ArgoWorkflow
				if workflow == nil || workflow.Source == nil || workflow.Source.Resource == nil {
					continue
				}
				obj := &unstructured.Unstructured{}
				if err := obj.UnmarshalJSON(workflow.Source.Resource.Value); err != nil {
					return fmt.Errorf("trigger %s: %w", trigger.Template.Name, err)
				}
				if err := triggers.ApplyResourceParameters(events, workflow.Parameters, obj); err != nil {
					res.Error = err.Error()
					res.Fired = false
					break
				}
				res.Workflows = append(res.Workflows, obj.Object)
			}
		}
		if err := out.Encode(res); err != nil {
			return err
		}
	}
	return nil
}
