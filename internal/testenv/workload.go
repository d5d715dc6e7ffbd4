package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/mfa-worker/mfa-worker/internal/job"
)

// Job is one job to publish.
type Job struct {
	ID, Type string
	Body     []byte
}

// Of builds one job.
func Of(id, typ string, user int64, params map[string]any) Job {
	m := map[string]any{"id": id, "type": typ, "user_id": user}
	if params != nil {
		m["params"] = params
	}
	b, _ := json.Marshal(m)
	return Job{ID: id, Type: typ, Body: b}
}

// Body builds a job body.
func Body(id, typ string, user int64, params map[string]any) string {
	return string(Of(id, typ, user, params).Body)
}

// Seeder is what a mixture needs of a OneLogin: devices enrolled up front.
type Seeder interface {
	EnrollDevice(user int64, factor, name string, active bool) (int64, error)
}

// Mixture is a repeating plan of jobs: Plan[i%10] is the type of the i-th
// job. Every job has an effect to make: the simulator is seeded with the
// devices its remove, offboard and activate jobs need.
type Mixture struct {
	Plan [10]job.Type
	// IDPrefix starts every id: <prefix>-<base>-<i>.
	IDPrefix string
	// OffboardDevices is how many factors an offboarded user has (1 or 2).
	OffboardDevices int
	// TokenExpiresIn is generate_token's expires_in (0: not set).
	TokenExpiresIn int
}

// BenchMix is the benchmarks' mix: 40% enroll, 20% remove, 20% offboard
// (one device each), 10% activate, 10% generate_token.
var BenchMix = Mixture{
	Plan:     [10]job.Type{"enroll", "enroll", "enroll", "enroll", "remove", "remove", "offboard", "offboard", "activate", "generate_token"},
	IDPrefix: "b", OffboardDevices: 1,
}

// FaultMix is the container fault suite's mix: 30% enroll, 20% activate,
// 10% generate_token, 20% offboard (two devices each), 20% remove.
var FaultMix = Mixture{
	Plan:     [10]job.Type{"enroll", "enroll", "enroll", "activate", "activate", "generate_token", "offboard", "offboard", "remove", "remove"},
	IDPrefix: "c", OffboardDevices: 2, TokenExpiresIn: 3600,
}

// Mix builds n jobs of BenchMix for users from base on.
func Mix(sim Seeder, n int, base int64) ([]Job, error) { return BenchMix.Jobs(sim, n, base) }

// Jobs builds n jobs of the mixture for users from base on, seeding sim.
func (x Mixture) Jobs(sim Seeder, n int, base int64) ([]Job, error) {
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, err
	}
	xkey, _ := kp.PublicKey() // tokens are sealed to it
	out := make([]Job, 0, n)
	for i := 0; i < n; i++ {
		user := base + int64(i)
		typ := x.Plan[i%10]
		var params map[string]any
		switch typ {
		case job.TypeEnroll:
			params = map[string]any{"factor_name": "OneLogin SMS", "display_name": "Phone", "number": "+15551230000"}
		case job.TypeRemove:
			dev, err := sim.EnrollDevice(user, "OneLogin Protect", "Pixel", true)
			if err != nil {
				return nil, err
			}
			params = map[string]any{"device_id": dev}
		case job.TypeOffboard:
			seeds := [][2]string{{"Google Authenticator", "GA"}, {"OneLogin Protect", "Pixel"}}
			for _, d := range seeds[:max(1, min(x.OffboardDevices, len(seeds)))] {
				if _, err := sim.EnrollDevice(user, d[0], d[1], true); err != nil {
					return nil, err
				}
			}
		case job.TypeActivate:
			dev, err := sim.EnrollDevice(user, "OneLogin Voice", "Desk", true)
			if err != nil {
				return nil, err
			}
			params = map[string]any{"device_id": dev}
		case job.TypeGenerateToken:
			params = map[string]any{"recipient_xkey": xkey}
			if x.TokenExpiresIn != 0 {
				params["expires_in"] = x.TokenExpiresIn
			}
		default:
			return nil, fmt.Errorf("mixture: no plan for type %q", typ)
		}
		out = append(out, Of(fmt.Sprintf("%s-%d-%d", x.IDPrefix, base, i), string(typ), user, params))
	}
	return out, nil
}

// Publish sends jobs to their subjects (or to prefix+type) with their ids
// as Nats-Msg-Id, asynchronously, and waits for every ack.
func Publish(js jetstream.JetStream, jobs []Job, prefix string) error {
	if prefix == "" {
		prefix = job.SubjectPrefix
	}
	for i, j := range jobs {
		m := nats.NewMsg(prefix + j.Type)
		m.Data = j.Body
		m.Header.Set(jetstream.MsgIDHeader, j.ID)
		if _, err := js.PublishMsgAsync(m); err != nil {
			return err
		}
		if i%5000 == 4999 {
			<-js.PublishAsyncComplete()
		}
	}
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-time.After(5 * time.Minute):
		return errors.New("publishing timed out")
	}
}

// Publish sends jobs to the bed's server; see Publish.
func (b *Bed) Publish(jobs []Job, prefix string) error { return Publish(b.JS, jobs, prefix) }

// PublishOne sends one body to mfa.jobs.<typ> with Nats-Msg-Id msgID (none
// when empty) and waits for its ack.
func PublishOne(ctx context.Context, js jetstream.JetStream, typ, body, msgID string) error {
	m := nats.NewMsg(job.SubjectPrefix + typ)
	m.Data = []byte(body)
	if msgID != "" {
		m.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	_, err := js.PublishMsg(ctx, m)
	return err
}

// RoundTrip publishes one job body to mfa.jobs.<typ> on the server at
// natsURL and returns the first result published after it.
func RoundTrip(natsURL, typ, body string, timeout time.Duration) (*nats.Msg, error) {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(job.ResultSubjectPrefix + ">")
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := PublishOne(ctx, js, typ, body, ""); err != nil {
		return nil, err
	}
	return sub.NextMsg(timeout)
}
